#!/usr/bin/env bash
# Autobahn|Testsuite (fuzzingclient) against wsgate.
#
#   tests/autobahn/run.sh install                    create (or reuse) the wstest virtualenv
#   tests/autobahn/run.sh echo    <host:port[/path]>  cases 1.*-10.* against a running echo
#                                                     server (the autobahn-echo example)
#   tests/autobahn/run.sh gateway <host:port[/path]>  the cases that need no echo against a
#                                                     running gateway that requires auth
#                                                     (path defaults to $WSGATE_WS_PATH or /ws)
#   tests/autobahn/run.sh check   echo|gateway        re-judge the last reports
#
# The server is started and stopped by the caller (.ci/run). Reports go to
# target/autobahn/<mode>/ (index.html to browse, index.json + one json per case);
# check_results.py judges them and the exit status says whether they pass. The case
# lists and the close code each gateway case must get are in cases.py, with reasons.
#
# Environment (all optional):
#   AUTOBAHN_VENV      where the tooling lives            default target/autobahn-venv
#   AUTOBAHN_REPORTS   report root                        default target/autobahn
#   AUTOBAHN_PY27      CPython 2.7 interpreter            default $(pyenv root)/versions/2.7.18/bin/python
#   AUTOBAHN_TIMEOUT   seconds allowed for one wstest run default 1200
#   PYTHON3            interpreter for the checker and bootstrap venv   default python3
#
# Install recipe (PyPI only), worked out on Debian 12 with pyenv's CPython 2.7.18:
#   1. python3 -m venv $AUTOBAHN_VENV/bootstrap; pip install virtualenv==20.21.1
#      (the last virtualenv that can still create Python 2.7 environments; it seeds
#      pip 20.3.4 / setuptools 44.1.1 / wheel 0.37.1 from its bundled wheels, no download)
#   2. virtualenv -p <2.7.18>/bin/python $AUTOBAHN_VENV/py27
#   3. py27/bin/pip install -c <constraints below> autobahntestsuite==25.10.1
#      autobahntestsuite 25.10.1 pins most of its tree itself (Twisted 19.10.0,
#      autobahn 0.10.9, txaio 2.1.0, cryptography 3.3.2, pyOpenSSL 19.1.0, ...); the
#      constraints fix the rest to the versions pip 20.3.4 resolved on 2.7, so a later
#      upload cannot change the tree. wsaccel (autobahn[accelerate]) is built from its
#      sdist: it needs gcc (apt build-essential) and pyenv's Python.h; the other binary
#      packages (cryptography, cffi, ujson, zope.interface) come as cp27 manylinux wheels.
# A finished install leaves a stamp with the recipe in it; with the same stamp the venv
# is reused, anything else (no stamp, half-built, another recipe) is rebuilt from scratch.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${AUTOBAHN_VENV:-$root/target/autobahn-venv}
reports=${AUTOBAHN_REPORTS:-$root/target/autobahn}
py3=${PYTHON3:-python3}
wstest_timeout=${AUTOBAHN_TIMEOUT:-1200}

AUTOBAHNTESTSUITE=25.10.1
VIRTUALENV=20.21.1
# Everything installed into the 2.7 venv, as resolved by pip 20.3.4 on CPython 2.7.18.
constraints=(
attrs==21.4.0
autobahn==0.10.9
Automat==22.10.0
cffi==1.15.1
constantly==15.1.0
cryptography==3.3.2
enum34==1.1.10
hyperlink==21.0.0
idna==2.10
incremental==16.10.1
ipaddress==1.0.23
Jinja2==2.11.3
klein==17.10.0
linecache2==1.0.0
MarkupSafe==1.1.1
pyasn1==0.5.1
pyasn1-modules==0.3.0
pycparser==2.21
PyHamcrest==1.10.1
pyOpenSSL==19.1.0
service-identity==18.1.0
setuptools==44.0.0
six==1.16.0
traceback2==1.4.0
Twisted==19.10.0
txaio==2.1.0
typing==3.10.0.0
ujson==2.0.3
unittest2==1.1.0
Werkzeug==1.0.1
wsaccel==0.6.6
zope.interface==4.6.0
)
stamp_text="autobahntestsuite==$AUTOBAHNTESTSUITE virtualenv==$VIRTUALENV ${constraints[*]}"

die() { echo "run.sh: $*" >&2; exit 1; }

py27_interpreter() {
  if [ -n "${AUTOBAHN_PY27:-}" ]; then
    echo "$AUTOBAHN_PY27"
    return
  fi
  local pyenv_root
  pyenv_root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
  echo "$pyenv_root/versions/2.7.18/bin/python"
}

install() {
  local stamp=$venv/.installed
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_text" ] && [ -x "$venv/py27/bin/wstest" ]; then
    echo "autobahn: reusing $venv ($("$venv/py27/bin/wstest" -a 2>/dev/null | tr '\n' ' '))"
    return
  fi
  local py27
  py27=$(py27_interpreter)
  [ -x "$py27" ] || die "no CPython 2.7 at $py27 (set AUTOBAHN_PY27)"
  "$py27" -c 'import sys; assert sys.version_info[:2] == (2, 7)' || die "$py27 is not Python 2.7"
  command -v gcc >/dev/null || die "gcc is needed to build wsaccel (apt-get install build-essential)"

  echo "autobahn: installing autobahntestsuite $AUTOBAHNTESTSUITE into $venv/py27 (python $("$py27" -V 2>&1))"
  if [ -d "$venv" ] && [ -n "$(ls -A "$venv")" ] && [ ! -e "$venv/bootstrap" ] && [ ! -e "$venv/py27" ]; then
    die "$venv exists and is not an autobahn venv; not deleting it"
  fi
  rm -rf "$venv"
  mkdir -p "$venv"
  local log=$venv/install.log
  {
    "$py3" -m venv "$venv/bootstrap" &&
      "$venv/bootstrap/bin/pip" install --no-input "virtualenv==$VIRTUALENV" &&
      "$venv/bootstrap/bin/virtualenv" --no-periodic-update -p "$py27" "$venv/py27" &&
      printf '%s\n' "${constraints[@]}" >"$venv/constraints-py27.txt" &&
      "$venv/py27/bin/pip" install --no-input --no-warn-script-location \
        -c "$venv/constraints-py27.txt" "autobahntestsuite==$AUTOBAHNTESTSUITE"
  } >"$log" 2>&1 || { tail -n 40 "$log" >&2; die "install failed (full log: $log)"; }
  local got
  got=$(PYTHONWARNINGS=ignore "$venv/py27/bin/wstest" -a 2>/dev/null | tr '\n' ' ')
  case "$got" in
    *"AutobahnTestSuite $AUTOBAHNTESTSUITE"*) ;;
    *) die "wstest did not install correctly (wstest -a: '$got')" ;;
  esac
  printf '%s' "$stamp_text" >"$stamp"
  echo "autobahn: installed ($got)"
}

# ws://host:port/path from host:port[/path]; gateway mode defaults the path to the ws path.
ws_url() {
  local mode=$1 addr=${2#ws://}
  case "$addr" in
    */*) echo "ws://$addr" ;;
    *) if [ "$mode" = gateway ]; then echo "ws://$addr${WSGATE_WS_PATH:-/ws}"; else echo "ws://$addr"; fi ;;
  esac
}

# A clear message when nothing listens, instead of a near-empty report.
probe() {
  local hostport=$1
  "$py3" - "$hostport" <<'EOF' || die "nothing accepts TCP connections at $hostport"
import socket, sys
host, _, port = sys.argv[1].rpartition(":")
try:
    socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
except (OSError, ValueError) as e:
    sys.exit("probe: %s" % e)
EOF
}

run_suite() {
  local mode=$1 addr=$2
  [ -n "$addr" ] || die "usage: run.sh $mode <host:port[/path]>"
  install
  local url out log hostport
  url=$(ws_url "$mode" "$addr")
  hostport=${url#ws://}
  hostport=${hostport%%/*}
  out=$reports/$mode
  log=$out/wstest.log
  probe "$hostport"
  rm -rf "$out"
  mkdir -p "$out"
  "$py3" "$here/cases.py" spec "$mode" "$url" "$out" >"$out/fuzzingclient.json"
  echo "autobahn: $mode run against $url (log: $log, timeout ${wstest_timeout}s)"
  local start=$SECONDS status=0
  # wstest writes its reports into outdir; cd so that nothing else lands in the checkout.
  (cd "$out" && PYTHONWARNINGS=ignore timeout --kill-after=30 "$wstest_timeout" \
    "$venv/py27/bin/wstest" -m fuzzingclient -s "$out/fuzzingclient.json") >"$log" 2>&1 || status=$?
  echo "autobahn: wstest finished in $((SECONDS - start)) s with status $status"
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    [ "$status" -eq 124 ] && die "wstest timed out after ${wstest_timeout}s"
    die "wstest failed (status $status)"
  fi
  if grep -q 'Connection to .* failed' "$log"; then
    grep 'Connection to .* failed' "$log" | head -n 3 >&2
    echo "autobahn: the fuzzingclient lost the server mid-run; the checker will count what ran" >&2
  fi
  local announced
  announced=$(sed -n 's/^Ok, will run \([0-9][0-9]*\) test cases.*/\1/p' "$log" | head -n 1)
  if [ "$mode" = echo ]; then
    "$py3" "$here/check_results.py" echo "$out" ${announced:+--expect-count "$announced"}
  else
    "$py3" "$here/check_results.py" gateway "$out"
  fi
}

case "${1:-}" in
  install) install ;;
  echo | gateway) run_suite "$1" "${2:-}" ;;
  check)
    mode=${2:-}
    [ "$mode" = echo ] || [ "$mode" = gateway ] || die "usage: run.sh check echo|gateway"
    "$py3" "$here/check_results.py" "$mode" "$reports/$mode"
    ;;
  *)
    sed -n '2,13p' "$0" >&2
    exit 2
    ;;
esac
