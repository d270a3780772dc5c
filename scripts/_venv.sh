# Sourced by scripts/*: creates ./.venv and installs the project (with extras) when
# pyproject.toml or constraints.txt changed since the last install.
ensure_venv() {
  local extras="${1:-}" spec="." stamp
  [ -n "$extras" ] && spec=".[$extras]"
  if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
  fi
  stamp="$(cat pyproject.toml constraints.txt 2>/dev/null | sha256sum | cut -c1-16)-$extras"
  if [ "$(cat .venv/.authsvc-installed 2>/dev/null)" != "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e "$spec"
    echo "$stamp" > .venv/.authsvc-installed
  fi
}
