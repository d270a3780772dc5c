# Sourced by scripts/*: creates ./.venv and installs the project (with extras) when
# pyproject.toml or constraints.txt changed since the last install, saying so on stderr.
# An install with more extras serves a request for fewer (scripts/serve after scripts/test).
ensure_venv() {
  local extras="${1:-}" spec="." hash installed have extra missing=""
  [ -n "$extras" ] && spec=".[$extras]"
  hash="$(cat pyproject.toml constraints.txt 2>/dev/null | sha256sum | cut -c1-16)"
  installed="$(cat .venv/.authsvc-installed 2>/dev/null || true)"
  if [ "${installed%%-*}" = "$hash" ] && [ -x .venv/bin/authsvc ]; then
    have=",${installed#*-},"
    for extra in ${extras//,/ }; do
      case "$have" in *",$extra,"*) ;; *) missing=1 ;; esac
    done
    [ -z "$missing" ] && return 0
  fi
  echo "authsvc: installing authsvc${extras:+ [$extras]} and its pinned dependencies into $PWD/.venv (a minute or two, once)..." >&2
  if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
  fi
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e "$spec"
  echo "$hash-$extras" > .venv/.authsvc-installed
  echo "authsvc: installed; its command line is scripts/authsvc (or .venv/bin/authsvc)" >&2
}
