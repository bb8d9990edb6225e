#!/usr/bin/env bash
# Checks a modelhub Debian package (built by packaging/build-deb.sh).
#
# Usage: packaging/test-deb.sh DEB
#
# Always: extracts it into a temporary directory and checks its control
# fields, that every file is there with its mode and owner, the unit's
# directives (hardening included), the default environment file against
# the flags the binary knows, the maintainer scripts (sh -n), the bash
# completion (bash -n), the manual pages (one per subcommand, each a
# gzip'd page with its .TH title) and `systemd-analyze verify` on the unit.
#
# As root with MODELHUB_PACKAGE_INSTALL_TEST=1, also installs it on this
# host (where systemd need not run): checks the user, group and state
# directory, runs the server as the unit would (as the user modelhub, with
# /etc/default/modelhub's variables and /run/modelhub made as
# RuntimeDirectory= makes it), checks both listeners, the socket's mode and
# group, that members of the group may use the socket and others may not,
# creates the first token as root over the socket, then removes and purges
# the package and checks that the data is kept. It refuses to run on a host
# where modelhub is installed or its user or data exist, and removes what
# it created at the end (pass or fail).
#
# Stops at the first failure, saying what failed; exit status 0 when every
# check passed.
set -euo pipefail

fail() {
  echo "test-deb: FAIL: $*" >&2
  exit 1
}
ok() {
  echo "test-deb: ok: $*"
}

[ $# -eq 1 ] || fail "usage: $0 DEB"
deb=$1
[ -f "$deb" ] || fail "no file $deb"
for tool in dpkg dpkg-deb tar gzip zcat md5sum stat sh bash; do
  command -v "$tool" >/dev/null || fail "missing $tool"
done

work=$(mktemp -d)
cleanup_install=false
server_pid=
cleanup() {
  local status=$?
  if [ "$cleanup_install" = true ]; then
    install_cleanup
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

# --- the package's contents ---------------------------------------------

field() {
  dpkg-deb --field "$deb" "$1"
}
for name in Package Version Architecture Maintainer Depends Section Priority Description; do
  [ -n "$(field "$name")" ] || fail "control field $name is missing or empty"
done
[ "$(field Package)" = modelhub ] || fail "Package is $(field Package)"
[ "$(field Architecture)" = "$(dpkg --print-architecture)" ] ||
  fail "Architecture is $(field Architecture), this host is $(dpkg --print-architecture)"
[ "$(field Section)" = admin ] || fail "Section is $(field Section)"
[ "$(field Priority)" = optional ] || fail "Priority is $(field Priority)"
depends=$(field Depends)
depends_names=$(tr ',' '\n' <<<"$depends" | sed 's/^ *//; s/[ (].*//')
for dep in libc6 passwd; do
  grep -qx "$dep" <<<"$depends_names" || fail "Depends ($depends) lacks $dep"
done
ok "control fields (Version $(field Version), Depends: $depends)"

# Modes and owners as the archive holds them.
dpkg-deb --contents "$deb" >"$work/contents"
if awk '$2 != "root/root"' "$work/contents" | grep -q .; then
  fail "entries not owned by root/root: $(awk '$2 != "root/root"' "$work/contents")"
fi
if awk '$1 ~ /^d/ && $1 != "drwxr-xr-x"' "$work/contents" | grep -q .; then
  fail "directories not 0755: $(awk '$1 ~ /^d/ && $1 != "drwxr-xr-x"' "$work/contents")"
fi
mode_of() {
  awk -v p="./$1" '$6 == p { print $1 }' "$work/contents"
}
expect_mode() {
  local path=$1 want=$2 got
  got=$(mode_of "$path")
  [ -n "$got" ] || fail "/$path is not in the package"
  [ "$got" = "$want" ] || fail "/$path has mode $got, expected $want"
}
expect_mode usr/bin/modelhub -rwxr-xr-x
for path in \
  lib/systemd/system/modelhub.service \
  etc/default/modelhub \
  usr/share/bash-completion/completions/modelhub \
  usr/share/zsh/vendor-completions/_modelhub \
  usr/share/fish/vendor_completions.d/modelhub.fish \
  usr/share/man/man1/modelhub.1.gz \
  usr/share/man/man1/modelhub-serve.1.gz \
  usr/share/doc/modelhub/copyright \
  usr/share/doc/modelhub/README.md.gz; do
  expect_mode "$path" -rw-r--r--
done
if awk '$1 ~ /^-/ && $1 != "-rw-r--r--" && $6 != "./usr/bin/modelhub"' "$work/contents" | grep -q .; then
  fail "files with an unexpected mode: $(awk '$1 ~ /^-/ && $1 != "-rw-r--r--" && $6 != "./usr/bin/modelhub"' "$work/contents")"
fi
dpkg-deb --ctrl-tarfile "$deb" | tar -tvf - >"$work/control-contents"
for script in postinst prerm postrm; do
  grep -Eq "^-rwxr-xr-x root/root .* \./$script\$" "$work/control-contents" ||
    fail "DEBIAN/$script is missing or not 0755 root/root: $(cat "$work/control-contents")"
done
ok "files, modes and owners"

root="$work/root"
control="$work/control"
dpkg-deb -x "$deb" "$root"
dpkg-deb -e "$deb" "$control"
[ "$(cat "$control/conffiles")" = /etc/default/modelhub ] ||
  fail "conffiles is '$(cat "$control/conffiles")', expected /etc/default/modelhub"
(cd "$root" && md5sum --check --quiet "$control/md5sums") || fail "md5sums do not match the files"
for script in postinst prerm postrm; do
  [ "$(head -n 1 "$control/$script")" = "#!/bin/sh" ] || fail "$script does not start with #!/bin/sh"
  grep -qx 'set -e' "$control/$script" || fail "$script lacks set -e"
  sh -n "$control/$script" || fail "sh -n $script"
done
ok "conffiles, md5sums, maintainer scripts (sh -n)"

unit="$root/lib/systemd/system/modelhub.service"
for line in \
  Type=notify \
  'ExecStart=/usr/bin/modelhub serve' \
  EnvironmentFile=-/etc/default/modelhub \
  User=modelhub Group=modelhub \
  StateDirectory=modelhub StateDirectoryMode=0750 \
  RuntimeDirectory=modelhub RuntimeDirectoryMode=0750 \
  Restart=on-failure \
  ProtectSystem=strict ProtectHome=yes NoNewPrivileges=yes PrivateTmp=yes \
  CapabilityBoundingSet= AmbientCapabilities= \
  PrivateDevices=yes ProtectKernelTunables=yes ProtectKernelModules=yes \
  ProtectKernelLogs=yes ProtectControlGroups=yes \
  'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' \
  RestrictNamespaces=yes LockPersonality=yes MemoryDenyWriteExecute=yes \
  RestrictRealtime=yes RestrictSUIDSGID=yes \
  SystemCallArchitectures=native SystemCallFilter=@system-service \
  SystemCallErrorNumber=EPERM UMask=0027 LimitNOFILE=65536 \
  WantedBy=multi-user.target; do
  grep -qxF "$line" "$unit" || fail "the unit lacks the line $line"
done
grep -Eq '^TimeoutStopSec=[0-9]+' "$unit" || fail "the unit sets no TimeoutStopSec"
grep -Eq '^Documentation=(.* )?man:modelhub\(1\)( |$)' "$unit" || fail "the unit's Documentation lacks man:modelhub(1)"
ok "unit directives"

bash -n "$root/usr/share/bash-completion/completions/modelhub" || fail "bash -n on the bash completion"
for completion in bash-completion/completions/modelhub zsh/vendor-completions/_modelhub \
  fish/vendor_completions.d/modelhub.fish; do
  grep -q serve "$root/usr/share/$completion" || fail "$completion does not know serve"
done
if command -v zsh >/dev/null; then
  zsh -n "$root/usr/share/zsh/vendor-completions/_modelhub" || fail "zsh -n on the zsh completion"
fi
if command -v fish >/dev/null; then
  fish --no-execute "$root/usr/share/fish/vendor_completions.d/modelhub.fish" || fail "fish -n on the fish completion"
fi
ok "completions"

man1="$root/usr/share/man/man1"
for page in "$man1"/*.gz; do
  zcat "$page" >"$work/page" || fail "$(basename "$page") does not gunzip"
  # The title comes first, after roff's preamble of string definitions.
  first=$(grep -m 1 -E '^\.(TH|SH)( |$)' "$work/page" || true)
  [[ "$first" == .TH* ]] || fail "$(basename "$page") has no .TH title before its sections"
done
# One page per subcommand named in modelhub(1), nested ones included.
zcat "$man1/modelhub.1.gz" | sed -n 's/^\(modelhub\\-[a-z-]*\)(1)$/\1/p' | sed 's/\\-/-/g' >"$work/subcommands"
[ -s "$work/subcommands" ] || fail "modelhub(1) names no subcommand"
while read -r page; do
  [ -f "$man1/$page.1.gz" ] || fail "no manual page $page.1.gz"
done <"$work/subcommands"
[ -f "$man1/modelhub-token-create.1.gz" ] || fail "no manual page for token create"
zcat "$man1/modelhub-serve.1.gz" >"$work/serve.1"
for flag in listen socket\\-group data tls\\-cert store etcd\\-endpoints; do
  grep -qF "\\-\\-$flag" "$work/serve.1" || fail "modelhub-serve(1) does not document --$flag"
done
ok "manual pages ($(find "$man1" -name '*.gz' | wc -l) pages)"

# Every variable the default file sets or mentions is one the server reads
# (the serve page names each flag's variable).
defaults="$root/etc/default/modelhub"
grep -qx 'MODELHUB_DATA=/var/lib/modelhub/modelhub.redb' "$defaults" || fail "the default file does not keep the data in /var/lib/modelhub"
grep -qx 'MODELHUB_LISTEN=unix:/run/modelhub/modelhub.sock' "$defaults" ||
  fail "the default file does not listen on unix:/run/modelhub/modelhub.sock alone (TCP waits for the first token)"
grep -qx '#MODELHUB_LISTEN=127.0.0.1:8080,unix:/run/modelhub/modelhub.sock' "$defaults" ||
  fail "the default file does not offer loopback TCP (commented out)"
grep -qx 'MODELHUB_SOCKET_GROUP=modelhub' "$defaults" || fail "the default file does not give the socket group modelhub"
for var in $(grep -oE '^#?MODELHUB_[A-Z_]+=' "$defaults" | tr -d '#='); do
  grep -qF "$var" "$work/serve.1" || fail "the default file names $var, which modelhub serve does not read"
done
ok "default environment file"

if command -v systemd-analyze >/dev/null; then
  # The unit as packaged but for ExecStart, which names the extracted
  # binary (it must exist); the manual pages are checked above.
  mkdir "$work/unit"
  sed "s|^ExecStart=/usr/bin/modelhub |ExecStart=$root/usr/bin/modelhub |" "$unit" >"$work/unit/modelhub.service"
  # Unknown or malformed directives are only warnings to it: any output
  # fails the test.
  systemd-analyze verify --man=no "$work/unit/modelhub.service" >"$work/verify" 2>&1 ||
    fail "systemd-analyze verify of the packaged unit: $(cat "$work/verify")"
  [ ! -s "$work/verify" ] || fail "systemd-analyze verify of the packaged unit warns: $(cat "$work/verify")"
  ok "systemd-analyze verify (the packaged unit)"
else
  echo "test-deb: skip: systemd-analyze verify of the packaged unit (no systemd-analyze: apt-get install systemd)"
fi

# --- installing it on this host -------------------------------------------

if [ "$(id -u)" != 0 ] || [ "${MODELHUB_PACKAGE_INSTALL_TEST:-}" != 1 ]; then
  echo "test-deb: skip: the installation test runs only as root with MODELHUB_PACKAGE_INSTALL_TEST=1 (it installs the package, creates users and removes them)"
  echo "test-deb: all checks passed"
  exit 0
fi
for tool in curl setpriv useradd userdel groupdel getent systemd-analyze; do
  command -v "$tool" >/dev/null || fail "missing $tool (systemd-analyze: apt-get install systemd)"
done

state=/var/lib/modelhub
run=/run/modelhub
sock=$run/modelhub.sock
member=modelhub-test-member
outsider=modelhub-test-outsider

status=$(dpkg-query -W -f='${Status}' modelhub 2>/dev/null || true)
case "$status" in
'' | 'unknown ok not-installed' | 'deinstall ok not-installed' | 'purge ok not-installed') ;;
*) fail "modelhub is on this host ($status): the test would change it; remove it first (dpkg -P modelhub)" ;;
esac
for name in modelhub "$member" "$outsider"; do
  if getent passwd "$name" >/dev/null; then
    fail "user $name exists: the test would change it; remove it first (userdel $name)"
  fi
done
if getent group modelhub >/dev/null; then
  fail "group modelhub exists: the test would change it; remove it first (groupdel modelhub)"
fi
for dir in "$state" "$run" /var/log/modelhub; do
  [ ! -e "$dir" ] || fail "$dir exists: the test would change it; remove it first"
done

install_cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  dpkg -P modelhub >/dev/null 2>&1 || true
  rm -rf "$state" "$run" /var/log/modelhub
  for name in "$member" "$outsider" modelhub; do
    if getent passwd "$name" >/dev/null; then userdel "$name" || true; fi
  done
  if getent group modelhub >/dev/null; then groupdel modelhub || true; fi
  echo "test-deb: removed the package, $state, the users and the group modelhub"
}
cleanup_install=true

dpkg -i "$deb" >"$work/dpkg-i" 2>&1 || fail "dpkg -i: $(cat "$work/dpkg-i")"
# Configured again over itself (postinst with the old version: an upgrade).
dpkg -i "$deb" >"$work/dpkg-i2" 2>&1 || fail "dpkg -i over itself: $(cat "$work/dpkg-i2")"
ok "dpkg -i (twice)"
# Enabled without a running systemd (deb-systemd-helper records it).
[ "$(readlink /etc/systemd/system/multi-user.target.wants/modelhub.service)" = /lib/systemd/system/modelhub.service ] ||
  fail "not enabled: /etc/systemd/system/multi-user.target.wants/modelhub.service is '$(readlink /etc/systemd/system/multi-user.target.wants/modelhub.service)'"
ok "enabled (the multi-user.target link), with no systemd running"

getent group modelhub >/dev/null || fail "no group modelhub after installation"
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd modelhub) || fail "no user modelhub after installation"
[ "$gid" = "$(getent group modelhub | cut -d: -f3)" ] || fail "the user modelhub's group is $gid, not modelhub"
[ "$home" = "$state" ] || fail "the user modelhub's home is $home"
[ "$shell" = /usr/sbin/nologin ] || fail "the user modelhub's shell is $shell"
[ "$uid" -lt 1000 ] || fail "the user modelhub is not a system user (uid $uid)"
[ "$(stat -c '%U:%G %a' "$state")" = "modelhub:modelhub 750" ] ||
  fail "$state is $(stat -c '%U:%G %a' "$state"), expected modelhub:modelhub 750"
ok "user and group modelhub (uid $uid), $state modelhub:modelhub 0750"

# It checks the unit's Documentation= pages with man, when there is one.
man_check=--man=yes
command -v man >/dev/null || man_check=--man=no
systemd-analyze verify "$man_check" /lib/systemd/system/modelhub.service >"$work/verify" 2>&1 ||
  fail "systemd-analyze verify /lib/systemd/system/modelhub.service: $(cat "$work/verify")"
[ ! -s "$work/verify" ] || fail "systemd-analyze verify /lib/systemd/system/modelhub.service warns: $(cat "$work/verify")"
ok "systemd-analyze verify (installed, $man_check)"

# The hardening, as systemd rates it (the README quotes the figure).
systemd-analyze security --offline=true /lib/systemd/system/modelhub.service >"$work/security" 2>&1 ||
  fail "systemd-analyze security: $(tail -n 3 "$work/security")"
exposure=$(sed -n 's/.*Overall exposure level for modelhub.service: \([0-9.]*\).*/\1/p' "$work/security")
[ -n "$exposure" ] || fail "no exposure level in: $(tail -n 3 "$work/security")"
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' || fail "exposure level $exposure, expected at most 2.0"
ok "systemd-analyze security: exposure $exposure"

# Run it as the unit would: RuntimeDirectory= makes /run/modelhub, the
# environment is the file's variables alone, the user is modelhub with no
# capability, from its state directory, with UMask=0027. The TCP port is
# the file's address with port 0 (a free port), so that a server already
# on 8080 on this host cannot fail the test.
install -d -m 0750 -o modelhub -g modelhub "$run"
env_vars=()
while IFS= read -r line; do
  env_vars+=("$line")
done < <(grep -E '^[A-Za-z_][A-Za-z0-9_]*=' /etc/default/modelhub)
# The file's commented loopback TCP line, with port 0.
tcp_listen=$(sed -n 's/^#\(MODELHUB_LISTEN=127\.0\.0\.1:\)8080,/\10,/p' /etc/default/modelhub)
[ "$tcp_listen" = "MODELHUB_LISTEN=127.0.0.1:0,unix:$sock" ] || fail "unexpected TCP line $tcp_listen"

# start_server [LISTEN]: runs the server with the file's variables (its
# MODELHUB_LISTEN replaced by LISTEN when given) and waits for /healthz on
# the socket and, with TCP, on $base.
start_server() {
  local vars=("${env_vars[@]}") i
  if [ $# -gt 0 ]; then
    for i in "${!vars[@]}"; do
      [[ "${vars[$i]}" != MODELHUB_LISTEN=* ]] || vars[i]=$1
    done
  fi
  (
    cd "$state"
    umask 0027
    exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "${vars[@]}" \
      setpriv --reuid=modelhub --regid=modelhub --init-groups --no-new-privs \
      --inh-caps=-all --bounding-set=-all /usr/bin/modelhub serve
  ) >"$work/out" 2>"$work/log" &
  server_pid=$!
  local up=false want_tcp=false
  [ $# -gt 0 ] && want_tcp=true
  base=
  for _ in $(seq 150); do
    kill -0 "$server_pid" 2>/dev/null || fail "the server exited: $(cat "$work/log")"
    base=$(sed -n 's/^modelhub listening on \(http:.*\)$/\1/p' "$work/out")
    if curl -sf -o /dev/null --unix-socket "$sock" http://localhost/healthz &&
      { [ "$want_tcp" = false ] || { [ -n "$base" ] && curl -sf -o /dev/null "$base/healthz"; }; }; then
      up=true
      break
    fi
    sleep 0.1
  done
  [ "$up" = true ] || fail "the server did not answer /healthz within 15 s: $(cat "$work/log")"
}

# stop_server: SIGTERM, a clean exit within 30 s, the socket removed.
stop_server() {
  kill -TERM "$server_pid"
  local stopped=false code=0
  for _ in $(seq 300); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      stopped=true
      break
    fi
    sleep 0.1
  done
  [ "$stopped" = true ] || fail "the server did not stop within 30 s of SIGTERM"
  wait "$server_pid" || code=$?
  server_pid=
  [ "$code" = 0 ] || fail "the server exited with $code after SIGTERM: $(cat "$work/log")"
  [ ! -e "$sock" ] || fail "$sock is left after a clean stop"
}

# As installed: the unix socket alone.
start_server
[ -z "$base" ] || fail "the default file opened TCP ($base) before any token exists"
ok "/healthz over $sock (no TCP listener by default)"

[ "$(stat -c '%a %U %G' "$sock")" = "660 modelhub modelhub" ] ||
  fail "$sock is $(stat -c '%a %U %G' "$sock"), expected 660 modelhub modelhub"
[ "$(stat -c '%a %U %G' "$run")" = "750 modelhub modelhub" ] || fail "$run is $(stat -c '%a %U %G' "$run")"
[ "$(stat -c %U "/proc/$server_pid")" = modelhub ] || fail "the server runs as $(stat -c %U "/proc/$server_pid")"
grep -q '^CapEff:[[:space:]]*0*$' "/proc/$server_pid/status" || fail "the server has capabilities: $(grep Cap "/proc/$server_pid/status")"
ok "socket 0660 modelhub:modelhub, server as modelhub without capabilities"

# A member of the group reaches the socket; anyone else is refused by the
# file system (nothing to authenticate yet).
useradd --system --no-create-home --shell /usr/sbin/nologin --groups modelhub "$member"
useradd --system --no-create-home --shell /usr/sbin/nologin "$outsider"
run_as() {
  local user=$1
  shift
  setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups "$@"
}
code=$(run_as "$member" curl -s -o /dev/null -w '%{http_code}' --unix-socket "$sock" http://localhost/healthz) || true
[ "$code" = 200 ] || fail "a member of group modelhub got '$code' on $sock"
if run_as "$outsider" curl -s -o /dev/null --unix-socket "$sock" http://localhost/healthz; then
  fail "a user outside group modelhub could use $sock"
fi
ok "group members may use the socket, others may not"

token=$(/usr/bin/modelhub token create --server "unix:$sock" --name install-test --role admin 2>"$work/token-err") ||
  fail "modelhub token create as root over $sock: $(cat "$work/token-err")"
[ -n "$token" ] || fail "modelhub token create printed no token"
stop_server
ok "first token created by root over the socket; clean stop on SIGTERM"

# Then, as the file's comment says, loopback TCP too.
start_server "$tcp_listen"
[ -n "$base" ] || fail "no TCP listener with $tcp_listen"
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/api/v1beta1/realms")
[ "$code" = 401 ] || fail "GET /api/v1beta1/realms without a token over TCP: $code, expected 401"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$base/api/v1beta1/realms")
[ "$code" = 200 ] || fail "GET /api/v1beta1/realms with the token: $code, expected 200"
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/ui/")
[ "$code" = 200 ] || fail "GET /ui/ over TCP: $code, expected 200"
stop_server
[ "$(stat -c '%U' "$state/modelhub.redb")" = modelhub ] || fail "$state/modelhub.redb is not owned by modelhub"
ok "with TCP: 401 without the token, 200 with it, the console served; database in $state owned by modelhub"

echo kept >"$state/install-test-marker"
dpkg -r modelhub >"$work/dpkg-r" 2>&1 || fail "dpkg -r: $(cat "$work/dpkg-r")"
[ ! -e /usr/bin/modelhub ] || fail "/usr/bin/modelhub is left after dpkg -r"
[ ! -e /lib/systemd/system/modelhub.service ] || fail "the unit is left after dpkg -r"
[ -f /etc/default/modelhub ] || fail "dpkg -r removed the conffile /etc/default/modelhub"
for file in modelhub.redb install-test-marker; do
  [ -f "$state/$file" ] || fail "dpkg -r removed $state/$file"
done
ok "dpkg -r keeps $state and /etc/default/modelhub"
[ "$(readlink /etc/systemd/system/modelhub.service)" = /dev/null ] ||
  fail "dpkg -r did not mask modelhub.service"
ok "dpkg -r masks the unit"

dpkg -P modelhub >"$work/dpkg-p" 2>&1 || fail "dpkg -P: $(cat "$work/dpkg-p")"
[ ! -e /etc/default/modelhub ] || fail "/etc/default/modelhub is left after dpkg -P"
for file in modelhub.redb install-test-marker; do
  [ -f "$state/$file" ] || fail "dpkg -P removed $state/$file"
done
getent passwd modelhub >/dev/null || fail "dpkg -P removed the user modelhub (it owns the kept data)"
grep -q "$state is kept" "$work/dpkg-p" || fail "dpkg -P did not say where the data is: $(cat "$work/dpkg-p")"
ok "dpkg -P keeps $state and the user modelhub, and says so"
if [ -e /etc/systemd/system/modelhub.service ] || [ -L /etc/systemd/system/modelhub.service ]; then
  fail "dpkg -P left the mask"
fi
[ ! -L /etc/systemd/system/multi-user.target.wants/modelhub.service ] || fail "dpkg -P left /etc/systemd/system/multi-user.target.wants/modelhub.service"
ok "dpkg -P forgets the unit's state"

echo "test-deb: all checks passed"
