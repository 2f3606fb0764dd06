# Sourced by the install.sh of each node package (sdk_js/, dashboard/): what they all need, written once.
#   need_node NAME        Node.js 20+ and npm, or say what NAME needs and fail
#   apt_install PKG...    the Debian packages not installed yet (as root, or through sudo)
#   npm_ci                npm ci in the current folder, when package-lock.json changed since the last install

need_node() {
  command -v node >/dev/null && command -v npm >/dev/null && node -e 'process.exit(parseInt(process.versions.node) < 20 ? 1 : 0)' ||
    { echo "$1 needs Node.js 20+ and npm" >&2; exit 1; }
}

apt_install() {
  local missing=() package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

npm_ci() {
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
  fi
}
