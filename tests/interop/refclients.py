"""Run independent reference STUN/NAT-discovery clients and a coturn server.

Each ``run_*`` function starts one third-party tool as a subprocess (optionally
behind a command prefix such as ``["ip", "netns", "exec", "ns1"]``), waits for
it with an explicit timeout and parses its verdict into our vocabulary:

* ``nat_type``: "open-internet", "full-cone", "restricted-cone",
  "port-restricted-cone", "symmetric", "symmetric-udp-firewall", "udp-blocked",
  "unknown" -- or ``None`` when the tool printed no verdict at all (crash,
  garbage).  "unknown" means the tool ran but explicitly could not classify.
* ``mapping`` / ``filtering``: "endpoint-independent", "address-dependent",
  "address-and-port-dependent", or ``None`` when the tool does not tell.

A tool that does not finish within ``timeout`` (or is not installed) raises
:class:`RefClientError` carrying whatever output was collected.

Nothing here imports project packages: this is the independent side of the
interop tests.  Findings below were measured against coturn 4.6.1 and a scratch
NAT-simulating STUN responder on loopback (Debian bookworm packages).

pystun3 2.0.0 (``python -m stun.cli``; same code as the ``pystun3`` script)
---------------------------------------------------------------------------
Command: ``python -m stun.cli -d -H SERVER -P PORT -p SRCPORT [-i SRCIP]``.
Output (stdout)::

    NAT Type: Open Internet
    External IP: 127.0.0.1
    External Port: 36503

``-d`` adds ``DEBUG:pystun3:Result: {...}`` dicts on stderr; the first one is
Test I and is what we report as ``public_address``.

* Classic RFC 3489 algorithm.  Requests are 20-byte headers with a random
  **16-byte transaction id, no magic cookie** (the first 4 id bytes are random),
  so a server must treat them as RFC 3489 requests.  CHANGE-REQUEST (0x0003)
  is sent as attribute bytes ``0003 0004 00000006`` (IP+port) / ``...02`` (port).
* Parses only MAPPED-ADDRESS (0x0001), SOURCE-ADDRESS (0x0004) and
  CHANGED-ADDRESS (0x0005).  It ignores XOR-MAPPED-ADDRESS and OTHER-ADDRESS,
  so **a server must send MAPPED-ADDRESS and CHANGED-ADDRESS** to RFC 3489
  requests.  Its attribute walker skips exactly ``4 + length`` bytes (no
  padding): every attribute length must be a multiple of 4 (coturn pads its
  SERVER-NAME value with NULs and declares length 24 to stay compatible), or
  parsing walks off the buffer and the CLI dies with a traceback.  A response
  whose message type is not in its table (anything but 0x0101/0x0111/...)
  raises KeyError.  Responses with a wrong transaction id are skipped and the
  retry counter is reset.
* Retransmission: one socket with a 2 s timeout; each test sends up to 4
  copies (same transaction id) at t=0, 2, 4, 6 s, giving up at 8 s.  So every
  unanswered test costs **8 s**: Blocked = 8 s, restricted-cone = 8 s,
  symmetric = 8 s, port-restricted-cone = 16 s (Test II and III both unanswered).
  A fully answered run takes ~0.15 s on loopback.
* Test order: I (primary), II (change IP+port), then I again to
  CHANGED-ADDRESS **IP and port**, then III (change port) sent to the
  CHANGED-ADDRESS.  If Test II is answered it says "Full Cone" without ever
  checking the mapping, so an address-dependent-mapping NAT with
  endpoint-independent filtering is reported as full cone.
* "Open Internet" requires MAPPED-ADDRESS == the ``-i`` source IP string; the
  default source IP is "0.0.0.0", so **without -i it can never say Open
  Internet / Symmetric UDP Firewall** -- on a NAT-less loopback it says
  "Full Cone".  Pass ``source_ip`` = the client's real interface address.
* Default source port is a fixed 54320 (with SO_REUSEADDR); we pass ``-p 0``.
* Verdict spellings (the constants in ``stun/__init__.py``): "Blocked",
  "Open Internet", "Full Cone", "Symmetric UDP Firewall", "Restric NAT",
  "Restric Port NAT", "Symmetric NAT",
  "Meet an error, when do Test1 on Changed IP and Port".  If CHANGED-ADDRESS
  is missing and Test II fails behind a NAT it crashes (``sendto((None,
  None))`` TypeError) instead.  The printed External IP/Port are those of the
  *last* test, i.e. ``None`` for "Restric Port NAT" and "Symmetric UDP
  Firewall", which is why we take the Test I result from the debug log.
* Exit status is 0 even for "Blocked"; 1 with a traceback on crashes.

Debian ``stun`` (stun-client 0.97~dfsg, the Vovida client)
-----------------------------------------------------------
Command: ``stun SERVER:PORT -v [-p SRCPORT]`` (the port rides on the host
argument; ``-p`` picks the local port pair P, P+1, default random).
Output (stdout)::

    STUN client version 0.97
    Primary: Independent Mapping, Port Dependent Filter, preserves ports, no hairpin\\t
    Return value is 0x000017

With ``-v`` every received message is dumped (``MappedAddress = ip:port``,
``SourceAddress``, ``ChangedAddress``, ``Received message of type 257  id=1``);
we take ``public_address`` from the id=1 (Test I) response.

* RFC 3489 requests, 28 bytes: 16-byte random transaction id **whose first
  byte is the test number** (1 = Test I, 2 = II change IP+port, 3 = III change
  port, 10 = Test I to the changed IP, 11 = hairpin to its own mapped
  address), no magic cookie, and always a CHANGE-REQUEST attribute (value 0
  for Test I).  Responses are matched to tests only by that first id byte, so
  a server must echo the transaction id verbatim.  Every retransmission uses a
  **fresh** transaction id.
* Parses MAPPED-ADDRESS and CHANGED-ADDRESS (needs CHANGED-ADDRESS, not
  OTHER-ADDRESS); attribute lengths must be multiples of 4 as for pystun3.
* Test I and I(2) go out from socket P, Tests II and III from socket P+1.
  Test I(2) goes to **the CHANGED-ADDRESS IP with the primary port** (not the
  changed port), so a server must also answer on ALT_IP:PORT.
* Timing: all tests run in parallel, retransmitted every ~180 ms (150 ms
  select + ~10 ms between sends) for 7 rounds (counter reset when Test I
  first answers); it always runs to the end: **~1.0 s when everything is
  answered, ~1.1-1.2 s when blocked or filtered**.
* "No NAT" is decided by trying to bind() the MAPPED-ADDRESS IP locally;
  then Test II answered -> "Open", else "Firewall".  If Test I(2) never gets
  an answer the mapping is assumed endpoint-independent.
* Verdict strings after "Primary: ": "Open", "Independent Mapping, Independent
  Filter", "Independent Mapping, Address Dependent Filter", "Independent
  Mapping, Port Dependent Filter", "Dependent Mapping" (each of the last four
  followed by ", preserves ports"/", random port" and ", will hairpin"/", no
  hairpin"), "Firewall", "Blocked or could not reach STUN server",
  "Some unknown type error detetecting NAT type", "...Unkown NAT type",
  "Some stun error detetecting NAT type" (then exit 255).
* The exit status is the low byte of the "Return value": 0x00 open, 0x02
  EIM/EIF, 0x04 EIM/ADF, 0x06 EIM/APDF, 0x08 dependent mapping, 0x0A firewall,
  0x0C blocked, 0xEE unknown, 0x0E unknown type; ``| 0x10`` when it did
  **not** hairpin, ``| 0x01`` when the port was preserved.  So a non-zero exit
  status is normal (e.g. 1 for "Open" on loopback); it is not an error signal.

coturn ``turnutils_natdiscovery`` (4.6.1)
-----------------------------------------
Command: ``turnutils_natdiscovery -m -f -p PORT [-L LOCALIP] SERVER``.
Output: blocks per response and verdict banners::

    -= Mapping Behavior Discovery =-
    ========================================
    RFC 5780 response 1
    No ALG: Mapped == XOR-Mapped
    0: : IPv4. Response origin: : 127.0.0.1:3478
    0: : IPv4. Other addr: : 127.0.0.2:3479
    0: : IPv4. UDP reflexive addr: 127.0.0.1:45281
    0: : IPv4. Local addr: : 0.0.0.0:45281
    ========================================
    NAT with Endpoint Independent Mapping!
    ========================================
    -= Filtering Behavior Discovery =-
    ...
    NAT with Address Dependent Filtering!

(the ``N: :`` prefix is seconds since start).  Other banners: "No NAT!
(Endpoint Independent Mapping)", "NAT with Address Dependent Mapping!",
"NAT with Address and Port Dependent Mapping!", "NAT with Endpoint
Independent Filtering!", "NAT with Address and Port Dependent Filtering!",
"STUN receive timeout..".

* RFC 5389 requests: 20-byte header with magic cookie + 12-byte id, no
  SOFTWARE/FINGERPRINT; CHANGE-REQUEST added for filtering tests.
* Needs XOR-MAPPED-ADDRESS (else "Cannot read the response") and
  **OTHER-ADDRESS** (0x802C); without OTHER-ADDRESS it prints no verdict at
  all.  MAPPED-ADDRESS is only used for the ALG check; RESPONSE-ORIGIN is
  only printed.
* No retransmission: one send per test and a 3 s SO_RCVTIMEO, so **each
  unanswered test costs 3 s** (blocked: 6 s; ADF: 3 s; APDF: 6 s).  A fully
  answered run takes ~10 ms on loopback.  Exit status is always 0.
* Mapping: Test I to SERVER:PORT; Test II to OTHER-ADDRESS **IP with the
  primary port**; if they differ, Test III to the OTHER-ADDRESS taken from
  **the Test II response** (not Test I).  coturn answers a request received
  on the alternate IP with OTHER-ADDRESS = alternate IP + other port, so Test
  III lands on ALT_IP:ALT_PORT.  A server that returns the RFC-literal
  "opposite" endpoint (PRIMARY_IP:ALT_PORT) for requests on ALT_IP:PORT makes
  natdiscovery report address-dependent-mapping NATs as
  address-and-port-dependent.  If Test II gets no answer the old reflexive
  address is compared with itself: it falsely reports EIM.
* Filtering: new socket; Test I, then CHANGE-REQUEST ip+port -> EIF if
  answered, else CHANGE-REQUEST port -> ADF if answered, else APDF.
* "No NAT!" is printed only when the reflexive address equals the bound
  local address, i.e. only with ``-L`` (without it the local address is
  0.0.0.0 and a NAT-less host is reported as EIM/EIF = full cone).  After
  "No NAT!" it carries on and also prints the EIM banner.

coturn ``turnserver`` (4.6.1)
-----------------------------
* Reads /etc/turnserver.conf unless ``-n``; Debian's file sets no-rfc5780
  and no-stun-backward-compatibility, which would break all three clients.
* With two ``-L`` addresses of one family RFC 5780 is on by default and it
  listens on IP1:P, IP1:ALT, IP2:P, IP2:ALT (``--alt-listening-port``,
  default P+1).
* RFC 3489 requests (no cookie) get MAPPED-ADDRESS, SOURCE-ADDRESS,
  CHANGED-ADDRESS, SERVER-NAME(0x8022, padded to length 24); RFC 5389
  requests get XOR-MAPPED-ADDRESS, MAPPED-ADDRESS, RESPONSE-ORIGIN,
  OTHER-ADDRESS, SOFTWARE.  OTHER-ADDRESS/CHANGED-ADDRESS: on IP1:P ->
  IP2:ALT, on IP1:ALT -> IP2:P, on IP2:P -> IP2:ALT, on IP2:ALT -> IP2:P.
* Startup until all four endpoints answer ~0.2 s; on SIGTERM it usually dies at
  once (exit -15), once observed to take ~2 s.
"""

from __future__ import annotations

import ast
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Final

__all__ = [
    "ADDRESS_AND_PORT_DEPENDENT",
    "ADDRESS_DEPENDENT",
    "BEHAVIOURS",
    "ENDPOINT_INDEPENDENT",
    "NAT_TYPES",
    "PYSTUN3_CMD",
    "Coturn",
    "RefClientError",
    "RefVerdict",
    "parse_natdiscovery",
    "parse_pystun3",
    "parse_stun_client",
    "run_natdiscovery",
    "run_pystun3",
    "run_stun_client",
    "stun_binding_probe",
]

ENDPOINT_INDEPENDENT: Final = "endpoint-independent"
ADDRESS_DEPENDENT: Final = "address-dependent"
ADDRESS_AND_PORT_DEPENDENT: Final = "address-and-port-dependent"
BEHAVIOURS: Final = frozenset({ENDPOINT_INDEPENDENT, ADDRESS_DEPENDENT, ADDRESS_AND_PORT_DEPENDENT})
NAT_TYPES: Final = frozenset(
    {
        "open-internet",
        "full-cone",
        "restricted-cone",
        "port-restricted-cone",
        "symmetric",
        "symmetric-udp-firewall",
        "udp-blocked",
        "unknown",
    }
)

#: How the pystun3 CLI is started (identical to the ``pystun3`` console script,
#: but independent of pyenv shims / PATH inside a namespace).
PYSTUN3_CMD: Final[tuple[str, ...]] = (sys.executable, "-m", "stun.cli")
STUN_CLIENT_CMD: Final[tuple[str, ...]] = ("stun",)
NATDISCOVERY_CMD: Final[tuple[str, ...]] = ("turnutils_natdiscovery",)
TURNSERVER_CMD: Final[tuple[str, ...]] = ("turnserver",)

_EI, _AD, _APD = ENDPOINT_INDEPENDENT, ADDRESS_DEPENDENT, ADDRESS_AND_PORT_DEPENDENT

Classification = tuple[str, str | None, str | None]


@dataclass(frozen=True)
class RefVerdict:
    """A reference tool's verdict translated into our vocabulary."""

    tool: str
    nat_type: str | None
    mapping: str | None
    filtering: str | None
    public_address: str | None  # "ip:port" as seen by the server (Test I)
    raw: str  # command line, exit status, stdout and stderr, for debugging


class RefClientError(RuntimeError):
    """The tool could not be run or did not finish within its timeout."""

    def __init__(self, tool: str, message: str, raw: str = "") -> None:
        super().__init__(f"{tool}: {message}")
        self.tool = tool
        self.raw = raw


# --------------------------------------------------------------------------- running


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data


def _raw(argv: Sequence[str], rc: int | str, out: str, err: str) -> str:
    return f"$ {' '.join(argv)}\n[exit {rc}]\n--- stdout ---\n{out}--- stderr ---\n{err}"


def _run(tool: str, argv: list[str], timeout: float) -> tuple[str, str]:
    """Run argv; return (text to parse, raw).  Raises RefClientError on timeout."""
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:  # run() has already killed the child
        raw = _raw(argv, f"timeout after {timeout}s", _text(exc.stdout), _text(exc.stderr))
        raise RefClientError(tool, f"no result within {timeout}s", raw) from exc
    except OSError as exc:
        raise RefClientError(tool, f"cannot execute {argv[0]!r}: {exc}") from exc
    out, err = _text(proc.stdout), _text(proc.stderr)
    return out + err, _raw(argv, proc.returncode, out, err)


# --------------------------------------------------------------------------- pystun3

_PYSTUN3_TYPES: Final[dict[str, Classification]] = {
    "Open Internet": ("open-internet", _EI, _EI),
    "Full Cone": ("full-cone", _EI, _EI),
    "Restric NAT": ("restricted-cone", _EI, _AD),
    "Restric Port NAT": ("port-restricted-cone", _EI, _APD),
    "Symmetric NAT": ("symmetric", None, None),
    "Symmetric UDP Firewall": ("symmetric-udp-firewall", _EI, None),
    "Blocked": ("udp-blocked", None, None),
    "Meet an error, when do Test1 on Changed IP and Port": ("unknown", None, None),
}


def parse_pystun3(text: str, raw: str | None = None) -> RefVerdict:
    """Parse pystun3 CLI output (stdout, optionally followed by ``-d`` stderr)."""
    nat_type = mapping = filtering = None
    m = re.search(r"^NAT Type: (.*?)\s*$", text, re.MULTILINE)
    if m:
        nat_type, mapping, filtering = _PYSTUN3_TYPES.get(m.group(1), ("unknown", None, None))
    public = None
    r = re.search(r"Result: (\{.*\})\s*$", text, re.MULTILINE)  # first = Test I
    if r:
        try:
            res = ast.literal_eval(r.group(1))
        except (ValueError, SyntaxError):
            res = {}
        if isinstance(res, dict) and res.get("ExternalIP") and res.get("ExternalPort"):
            public = f"{res['ExternalIP']}:{res['ExternalPort']}"
    if public is None:
        ip = re.search(r"^External IP: (\S+)\s*$", text, re.MULTILINE)
        port = re.search(r"^External Port: (\S+)\s*$", text, re.MULTILINE)
        if ip and port and ip.group(1) != "None" and port.group(1) != "None":
            public = f"{ip.group(1)}:{port.group(1)}"
    return RefVerdict("pystun3", nat_type, mapping, filtering, public, text if raw is None else raw)


def run_pystun3(
    prefix: Sequence[str],
    server_ip: str,
    port: int = 3478,
    source_ip: str | None = None,
    source_port: int = 0,
    timeout: float = 60,
) -> RefVerdict:
    """Run the pystun3 CLI.  Pass ``source_ip`` or it can never detect "no NAT"."""
    argv = [*prefix, *PYSTUN3_CMD, "-d", "-H", server_ip, "-P", str(port), "-p", str(source_port)]
    if source_ip is not None:
        argv += ["-i", source_ip]
    text, raw = _run("pystun3", argv, timeout)
    return parse_pystun3(text, raw)


# --------------------------------------------------------------------------- Vovida stun

_STUN_CLIENT_TYPES: Final[tuple[tuple[str, Classification], ...]] = (
    ("Open", ("open-internet", _EI, _EI)),
    ("Independent Mapping, Independent Filter", ("full-cone", _EI, _EI)),
    ("Independent Mapping, Address Dependent Filter", ("restricted-cone", _EI, _AD)),
    ("Independent Mapping, Port Dependent Filter", ("port-restricted-cone", _EI, _APD)),
    ("Dependent Mapping", ("symmetric", None, None)),
    ("Firewall", ("symmetric-udp-firewall", _EI, None)),
    ("Blocked or could not reach STUN server", ("udp-blocked", None, None)),
)


def _stun_client_classify(verdict: str) -> Classification:
    for label, result in _STUN_CLIENT_TYPES:
        if verdict == label or verdict.startswith(label + ","):
            return result
    return ("unknown", None, None)


def parse_stun_client(text: str, raw: str | None = None) -> RefVerdict:
    """Parse the Debian/Vovida ``stun`` client output (``-v`` optional)."""
    nat_type = mapping = filtering = None
    m = re.search(r"^(?:Primary|Secondary): (.*?)\s*$", text, re.MULTILINE)
    if m:
        nat_type, mapping, filtering = _stun_client_classify(m.group(1))
    public = None
    last_mapped: str | None = None
    for line in text.splitlines():
        if line.startswith("Received stun message"):
            last_mapped = None
        mm = re.match(r"\s*MappedAddress = (\S+)", line)
        if mm:
            last_mapped = mm.group(1)
        rm = re.match(r"Received message of type (\d+)\s+id=(\d+)", line)
        if rm and rm.group(1) == "257" and rm.group(2) == "1" and last_mapped:
            public = last_mapped
            break
    return RefVerdict("stun", nat_type, mapping, filtering, public, text if raw is None else raw)


def run_stun_client(
    prefix: Sequence[str],
    server_ip: str,
    port: int = 3478,
    timeout: float = 60,
    source_port: int | None = None,
) -> RefVerdict:
    """Run Debian's ``stun`` (Vovida 0.97).  Its exit status is a bit field, not success."""
    argv = [*prefix, *STUN_CLIENT_CMD, f"{server_ip}:{port}", "-v"]
    if source_port:
        argv += ["-p", str(source_port)]
    text, raw = _run("stun", argv, timeout)
    return parse_stun_client(text, raw)


# --------------------------------------------------------------------------- natdiscovery

_ND_BEHAVIOUR: Final[dict[str, str]] = {
    "Endpoint Independent": _EI,
    "Address Dependent": _AD,
    "Address and Port Dependent": _APD,
}
_ND_MAPPING_RE: Final = re.compile(
    r"NAT with (Endpoint Independent|Address Dependent|Address and Port Dependent) Mapping!"
)
_ND_FILTERING_RE: Final = re.compile(
    r"NAT with (Endpoint Independent|Address Dependent|Address and Port Dependent) Filtering!"
)
_ND_CONE: Final[dict[str, str]] = {
    _EI: "full-cone",
    _AD: "restricted-cone",
    _APD: "port-restricted-cone",
}


def parse_natdiscovery(text: str, raw: str | None = None) -> RefVerdict:
    """Parse ``turnutils_natdiscovery -m -f`` output."""
    map_part, _, filt_part = text.partition("-= Filtering Behavior Discovery =-")
    if "-= Mapping Behavior Discovery =-" not in map_part:
        map_part, filt_part = "", text
    mm = _ND_MAPPING_RE.search(map_part)
    fm = _ND_FILTERING_RE.search(filt_part)
    mapping = _ND_BEHAVIOUR[mm.group(1)] if mm else None
    filtering = _ND_BEHAVIOUR[fm.group(1)] if fm else None
    no_nat = "No NAT!" in text
    if no_nat and mapping is None:
        mapping = _EI
    answered = "UDP reflexive addr" in text
    public = None
    pm = re.search(r"UDP reflexive addr:?\s*(\S+)", map_part or filt_part)
    if pm:
        public = pm.group(1)

    nat_type: str | None
    if not answered:
        nat_type = "udp-blocked" if "STUN receive timeout" in text else None
    elif no_nat:
        if filtering == _EI:
            nat_type = "open-internet"
        elif filtering is not None:
            nat_type = "symmetric-udp-firewall"
        else:
            nat_type = "unknown"
    elif mapping == _EI and filtering is not None:
        nat_type = _ND_CONE[filtering]
    elif mapping in (_AD, _APD):
        nat_type = "symmetric"
    else:  # e.g. no OTHER-ADDRESS in the responses: no behaviour verdict printed
        nat_type = "unknown"
    return RefVerdict(
        "natdiscovery", nat_type, mapping, filtering, public, text if raw is None else raw
    )


def run_natdiscovery(
    prefix: Sequence[str],
    server_ip: str,
    port: int = 3478,
    timeout: float = 120,
    local_ip: str | None = None,
) -> RefVerdict:
    """Run coturn's RFC 5780 ``turnutils_natdiscovery -m -f``.

    Pass ``local_ip`` (``-L``) to let it recognise "No NAT" (-> open-internet);
    without it a NAT-less host comes out as EIM + EIF (full-cone).
    """
    argv = [*prefix, *NATDISCOVERY_CMD, "-m", "-f", "-p", str(port)]
    if local_ip is not None:
        argv += ["-L", local_ip]
    argv.append(server_ip)
    text, raw = _run("natdiscovery", argv, timeout)
    return parse_natdiscovery(text, raw)


# --------------------------------------------------------------------------- STUN probe

_MAGIC_COOKIE: Final = 0x2112A442


def _binding_request() -> tuple[bytes, bytes]:
    tid = os.urandom(12)
    return struct.pack("!HHI", 0x0001, 0, _MAGIC_COOKIE) + tid, tid


def stun_binding_probe(ip: str, port: int, recv_timeout: float = 0.2) -> bool:
    """Send one RFC 5389 Binding request; True if a matching success response arrives."""
    req, tid = _binding_request()
    deadline = time.monotonic() + recv_timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(req, (ip, port))
        except OSError:
            return False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            sock.settimeout(left)
            try:
                data = sock.recv(2048)
            except (TimeoutError, OSError):
                return False
            if len(data) >= 20 and data[:2] == b"\x01\x01" and data[8:20] == tid:
                return True


# Same probe as a standalone script, for servers inside a network namespace.
_PROBE_SCRIPT: Final = """
import os, socket, struct, sys
ip, port, t = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
tid = os.urandom(12)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(t)
try:
    s.sendto(struct.pack("!HHI", 1, 0, 0x2112A442) + tid, (ip, port))
    d = s.recv(2048)
except OSError:
    sys.exit(1)
sys.exit(0 if d[:2] == b"\\x01\\x01" and d[8:20] == tid else 1)
"""


def _probe(prefix: Sequence[str], ip: str, port: int, recv_timeout: float) -> bool:
    if not prefix:
        return stun_binding_probe(ip, port, recv_timeout)
    argv = [*prefix, sys.executable, "-c", _PROBE_SCRIPT, ip, str(port), str(recv_timeout)]
    try:
        rc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=recv_timeout + 10,
            check=False,
        ).returncode
    except subprocess.TimeoutExpired:
        return False
    return rc == 0


# --------------------------------------------------------------------------- coturn


class Coturn:
    """``turnserver`` on two IPv4 addresses with RFC 5780 enabled (STUN only).

    Listens on primary_ip:port, primary_ip:alt_port, alt_ip:port and
    alt_ip:alt_port.  Config file, CLI, TLS/DTLS and TCP are disabled; pid
    file, SQLite user DB and log live in a private temp dir.  ``__enter__``
    returns once all four endpoints answer a Binding request.
    """

    def __init__(
        self,
        primary_ip: str,
        alt_ip: str,
        *,
        port: int = 3478,
        alt_port: int | None = None,
        prefix: Sequence[str] = (),
        startup_timeout: float = 15.0,
        stop_timeout: float = 5.0,
        extra_args: Sequence[str] = (),
        relay_secret: str | None = None,
    ) -> None:
        self.primary_ip = primary_ip
        # With a secret: a full TURN relay on primary_ip with TURN REST credentials
        # (use-auth-secret), relaying from primary_ip; without: STUN only.
        self.relay_secret = relay_secret
        self.alt_ip = alt_ip
        self.port = port
        self.alt_port = port + 1 if alt_port is None else alt_port
        self.prefix = list(prefix)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: str = ""  # full server output, filled in on exit
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._logf: IO[bytes] | None = None

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return [
            (ip, p) for ip in (self.primary_ip, self.alt_ip) for p in (self.port, self.alt_port)
        ]

    @property
    def log_path(self) -> Path | None:
        return None if self._tmp is None else Path(self._tmp.name) / "turnserver.log"

    def argv(self, tmpdir: str) -> list[str]:
        return [
            *self.prefix,
            *TURNSERVER_CMD,
            "-n",  # ignore /etc/turnserver.conf (Debian's disables RFC 5780 / RFC 3489)
            "-L", self.primary_ip,
            "-L", self.alt_ip,
            "-p", str(self.port),
            "--alt-listening-port", str(self.alt_port),
            *(
                ["--use-auth-secret", "--static-auth-secret", self.relay_secret,
                 "--realm", "holepunch", "--relay-ip", self.primary_ip,
                 "--min-port", "50000", "--max-port", "50999"]
                if self.relay_secret is not None
                else ["--stun-only"]
            ),
            # TCP stays on: like any STUN server (natprobe tells "UDP blocked" from "no
            # server" by trying TCP).
            "--no-tls", "--no-dtls",
            "--no-cli",
            "--log-file", "stdout",
            "--simple-log",
            "--log-binding",
            "--pidfile", os.path.join(tmpdir, "turnserver.pid"),
            "--userdb", os.path.join(tmpdir, "turndb.sqlite"),
            "-m", "1",
            *self.extra_args,
        ]  # fmt: skip

    def read_log(self) -> str:
        path = self.log_path
        if path is not None and path.exists():
            return path.read_text("utf-8", "replace")
        return self.log

    def _check_ports_free(self) -> None:
        for ep in self.endpoints:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind(ep)
                except OSError as exc:
                    raise RuntimeError(f"coturn endpoint {ep} is not free: {exc}") from exc

    def __enter__(self) -> Coturn:
        if not self.prefix:
            self._check_ports_free()
        self._tmp = tempfile.TemporaryDirectory(prefix="coturn-")
        log_path = Path(self._tmp.name) / "turnserver.log"
        self._logf = log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                self.argv(self._tmp.name),
                stdin=subprocess.DEVNULL,
                stdout=self._logf,
                stderr=subprocess.STDOUT,
                cwd=self._tmp.name,
            )
            self._wait_ready()
        except BaseException:
            self._stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        pending = list(self.endpoints)
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"turnserver exited with {self.proc.returncode}:\n{self.read_log()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"turnserver not answering on {pending} after {self.startup_timeout}s:\n"
                    f"{self.read_log()}"
                )
            ep = pending[0]
            if _probe(self.prefix, ep[0], ep[1], recv_timeout=0.2):
                pending.pop(0)

    def _stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=self.stop_timeout)
        if self._logf is not None:
            self._logf.close()
            self._logf = None
        self.log = self.read_log()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()
