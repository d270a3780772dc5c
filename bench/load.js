#!/usr/bin/env node
// Load generators of the benchmark (bench/run.py drives them; see the README's "Benchmark").
// Each mode prints one JSON object on stdout:
//   {"ok": <2xx count>, "duration": s, "rate": ok/s, "p50": ms, "p99": ms, "errors": n,
//    "statuses": {"200": n, ...}, "transport_errors": n, "timeouts": n}
//
//   chain  W2: every connection logs in once (before: --tokens names a JSON list of refresh
//          tokens, one per connection), then refreshes with the refresh token it just got
//          (autocannon, closed loop). A non-200 is an error and breaks that chain; the
//          connection then logs in again and goes on.
//   post   W3/W5: logins (each of the --users users in turn) from N connections, for a
//          duration or a number of requests (autocannon, closed loop).
//   paced  W4: GETs at a fixed rate, open loop: each request starts at its scheduled time
//          on a connection of its own if the others are busy, and its latency is counted
//          from that scheduled time, so a stalled server shows up in full (no coordinated
//          omission, which closed-loop tools such as autocannon and wrk have).
'use strict'

const fs = require('node:fs')
const http = require('node:http')
const autocannon = require('autocannon')

function parseArgs (argv) {
  const args = { _: argv[0] }
  for (let i = 1; i < argv.length; i += 2) {
    args[argv[i].replace(/^--/, '')] = argv[i + 1]
  }
  return args
}

function percentile (sorted, p) {
  if (sorted.length === 0) return null
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank]
}

function summary (latencies, statuses, duration, extra) {
  latencies.sort((a, b) => a - b)
  let ok = 0
  let bad = 0
  for (const [code, n] of Object.entries(statuses)) {
    if (code >= 200 && code < 300) ok += n
    else bad += n
  }
  const transport = extra.transport_errors || 0
  const timeouts = extra.timeouts || 0
  return {
    ok,
    duration,
    rate: ok / duration,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    max: latencies.length ? latencies[latencies.length - 1] : null,
    errors: bad + transport + timeouts,
    statuses,
    ...extra
  }
}

// One request with node:http; resolves {status, body} (never rejects on HTTP status).
function request (url, { method = 'GET', headers = {}, body, agent }) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }))
    })
    req.on('error', reject)
    if (body !== undefined) req.write(body)
    req.end()
  })
}

function credentials (args, i) {
  const users = Number(args.users || 1)
  return JSON.stringify({ username: `${args.prefix}${i % users}`, password: args.password })
}

// Runs autocannon, keeps every response's latency and status (2xx or not), and resolves a
// summary. The instance's own histogram only records 2xx and whole milliseconds.
function cannon (opts, afterResponse) {
  return new Promise((resolve, reject) => {
    const latencies = []
    const statuses = {}
    let transportErrors = 0
    const started = process.hrtime.bigint()
    const instance = autocannon(opts, (err, result) => {
      if (err) return reject(err)
      const duration = Number(process.hrtime.bigint() - started) / 1e9
      resolve(summary(latencies, statuses, duration, {
        transport_errors: transportErrors, timeouts: result.timeouts, sent: result.requests.sent
      }))
    })
    instance.on('response', (client, status, bytes, ms) => {
      latencies.push(ms)
      statuses[status] = (statuses[status] || 0) + 1
      if (afterResponse) afterResponse(client)
    })
    instance.on('reqError', () => { transportErrors += 1 })
  })
}

async function chain (args) {
  const base = args.url
  const connections = Number(args.connections)
  const login = credentials.bind(null, args)
  // Every connection's first login happened before the measured window (bench/run.py
  // passes the refresh tokens it got); a connection whose chain broke logs in again inside
  // it, and that login counts as a request.
  const fresh = JSON.parse(fs.readFileSync(args.tokens, 'utf8'))
  if (fresh.length < connections) throw new Error(`${connections} connections, ${fresh.length} tokens`)
  let relogins = 0
  const step = {
    method: 'POST',
    path: '/generateTokens',
    headers: { 'content-type': 'application/json' },
    setupRequest (req, context) {
      if (!context.rt && fresh.length) context.rt = fresh.pop()
      if (context.rt) {
        return { ...req, path: '/generateTokens', body: JSON.stringify({ refresh_token: context.rt }) }
      }
      relogins += 1
      return { ...req, path: '/login', body: login(relogins) }
    },
    onResponse (status, body, context) {
      context.rt = status === 200 ? JSON.parse(body).refresh_token : null
    }
  }
  // autocannon resets a connection's context to a copy of `initialContext` whenever it wraps
  // around its list of requests (here: after every request), so each response also makes the
  // connection's token its initial context (autocannon 9's Client.requestIterator, pinned).
  const result = await cannon({
    url: base,
    connections,
    duration: Number(args.duration),
    timeout: Number(args.timeout || 10),
    requests: [step]
  }, (client) => {
    const iterator = client.requestIterator
    iterator.initialContext = { rt: iterator.context.rt }
  })
  result.relogins = relogins
  return result
}

async function post (args) {
  let n = 0
  const opts = {
    url: `${args.url}${args.path}`,
    connections: Number(args.connections),
    timeout: Number(args.timeout || 10),
    // each request logs in the next of the --users users in turn
    requests: [{
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      setupRequest: (req) => ({ ...req, body: credentials(args, n++) })
    }]
  }
  if (args.amount) opts.amount = Number(args.amount)
  else opts.duration = Number(args.duration)
  return cannon(opts)
}

async function paced (args) {
  const rate = Number(args.rate)
  const duration = Number(args.duration)
  const total = Math.max(1, Math.round(rate * duration))
  const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity })
  const headers = args.token ? { authorization: `Bearer ${args.token}` } : {}
  const url = `${args.url}${args.path}`
  const latencies = []
  const statuses = {}
  let transportErrors = 0
  const origin = process.hrtime.bigint() + 20_000_000n // first request 20 ms from now
  const pending = []
  for (let i = 0; i < total; i++) {
    const scheduled = origin + BigInt(Math.round((i * 1e9) / rate))
    const wait = Number(scheduled - process.hrtime.bigint()) / 1e6
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
    pending.push(request(url, { headers, agent }).then((res) => {
      latencies.push(Number(process.hrtime.bigint() - scheduled) / 1e6)
      statuses[res.status] = (statuses[res.status] || 0) + 1
    }, () => { transportErrors += 1 }))
  }
  await Promise.all(pending)
  agent.destroy()
  const elapsed = Number(process.hrtime.bigint() - origin) / 1e9
  return summary(latencies, statuses, elapsed, { transport_errors: transportErrors, scheduled: total })
}

const modes = { chain, post, paced }

async function main () {
  const args = parseArgs(process.argv.slice(2))
  const mode = modes[args._]
  if (!mode) {
    process.stderr.write('usage: load.js chain|post|paced --url URL [--option value ...]\n')
    process.exit(2)
  }
  const result = await mode(args)
  process.stdout.write(JSON.stringify(result) + '\n')
}

main().catch((err) => {
  process.stderr.write(`load.js: ${err.stack || err}\n`)
  process.exit(1)
})
