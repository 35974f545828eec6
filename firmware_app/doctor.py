"""``firmware-app doctor``: what this machine offers the phone and whether the configuration fits it.

Runs without the phone (and beside a running one): it lists ALSA's cards, PCMs and mixer controls (from
alsa-lib), asks the installed PJSUA2 build for its version and sound devices (it starts the library for a
moment, with no transport and no device open), makes the same device choice the engine makes for the
configured names, checks the audio plugin's mixer controls and ring device, and asks the registrar: one SIP
OPTIONS over UDP from a short-lived socket (any SIP reply counts as an answer), or for a TCP/TLS account a
TCP connect to its port. Names are looked up with A/AAAA records only (no SRV/NAPTR), as the phone does.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from firmware_app import __version__, alsa
from firmware_app import config as cfg
from firmware_app.errors import ConfigError

OPTIONS_TIMEOUT = 2.0


def run(config_path: str) -> dict[str, Any]:
    """The report, as plain JSON values; ``report["problems"]`` lists what needs a person's attention."""
    problems: list[str] = []
    report: dict[str, Any] = {"firmware_app": __version__, "config": {"path": config_path}}
    config: cfg.Config | None = None
    try:
        config = cfg.load(config_path, secrets=False)
        report["config"]["ok"] = True
    except ConfigError as e:
        report["config"].update(ok=False, error=str(e))
        problems.append(str(e))

    # alsa-lib and its plugins (jack) print to stderr while they are probed, and PJSIP to stdout before
    # its log settings apply: neither belongs in the report (--json is read by programs).
    with _quiet():
        report["alsa"] = _alsa_report(problems)
        report["pjsua2"] = _pjsua2_report(problems)
        if config is not None:
            report["configured"] = _configured(config, report, problems)
    if config is not None:
        report["plugins"] = _plugin_sections(config_path, problems)
        report["registrar"] = check_registrar(config)
        if not report["registrar"]["ok"]:
            problems.append(f"registrar {report['registrar']['target']}: {report['registrar']['error']}")
    report["problems"] = problems
    report["ok"] = not problems
    return report


def _plugin_sections(config_path: str, problems: list[str]) -> dict[str, Any]:
    """Each plugin's own findings (:func:`firmware_app.hookspecs.softphone_doctor`), by section name."""
    from firmware_app import app

    try:
        config, host = app.prepare(config_path, secrets=False)
    except ConfigError as e:
        problems.append(str(e))
        return {}
    sections: dict[str, Any] = {}
    for section in host.doctor(config):
        if not isinstance(section, dict) or not section.get("name"):
            continue
        sections[str(section["name"])] = section
        problems.extend(str(p) for p in section.get("problems", ()))
    return sections


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _alsa_report(problems: list[str]) -> dict[str, Any]:
    if not alsa.available():
        problems.append("alsa-lib (libasound.so.2) is not installed")
        return {"available": False, "cards": [], "pcms": [], "mixers": {}}
    cards, pcms = alsa.cards(), alsa.pcms()
    mixers: dict[str, Any] = {}
    for device in ["default", *(f"hw:CARD={c.id}" for c in cards)]:
        try:
            mixers[device] = [asdict(c) for c in alsa.controls(device)]
        except alsa.AlsaError as e:
            mixers[device] = {"error": str(e)}
    return {
        "available": True,
        "cards": [asdict(c) for c in cards],
        "pcms": [asdict(p) for p in pcms],
        "mixers": mixers,
    }


def _pjsua2_report(problems: list[str]) -> dict[str, Any]:
    try:
        from firmware_app import engine
    except ImportError as e:
        problems.append(f"PJSUA2 is not installed ({e})")
        return {"installed": False, "error": str(e)}
    try:
        probe = engine.probe_sound()
    except Exception as e:  # pjsua2.Error has no useful str()
        reason = getattr(e, "reason", "") or str(e) or type(e).__name__
        problems.append(f"PJSUA2 does not start: {reason}")
        return {"installed": True, "error": reason}
    if not probe.backends:
        problems.append(f"PJSUA2 {probe.version} has no sound backend (built without ALSA): calls use the null device")
    return {
        "installed": True,
        "version": probe.version,
        "sound_backends": list(probe.backends),
        "devices": [{"name": n, "inputs": i, "outputs": o} for n, i, o in probe.devices],
    }


def _configured(config: cfg.Config, report: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """The configured devices and controls, found (and what they are) or not."""
    audio = config.audio
    pj_devices = [(d["name"], d["inputs"], d["outputs"]) for d in report["pjsua2"].get("devices", [])]
    pcms = [alsa.Pcm(**p) for p in report["alsa"]["pcms"]]
    cards = [alsa.Card(**c) for c in report["alsa"]["cards"]]
    out: dict[str, Any] = {}
    for key, wanted, capture in (
        ("capture_device", audio.capture_device, True),
        ("playback_device", audio.playback_device, False),
    ):
        entry: dict[str, Any] = {"configured": wanted}
        if not pj_devices:
            entry.update(found=False, note="no PJSUA2 sound devices: calls use the null device")
        else:
            index = alsa.choose(pj_devices, wanted, capture=capture, pcms=pcms, cards=cards)
            entry.update(found=index is not None, device=pj_devices[index][0] if index is not None else None)
            what = "capture" if capture else "playback"
            here = ", ".join(n for n, i, o in pj_devices if (i if capture else o)) or "none"
            listed = alsa.choose([(n, 1, 1) for n, _, _ in pj_devices], wanted, capture=capture, pcms=pcms, cards=cards)
            if index is None and wanted == "default":  # the engine falls back to the null device
                problems.append(f"audio.{key}: ALSA has no usable default {what} device: calls would have no sound")
            elif index is None and listed is not None:  # e.g. a hw: device the running phone holds
                entry["listed_as"] = pj_devices[listed][0]
                problems.append(
                    f"audio.{key}: {pj_devices[listed][0]} matches {wanted!r} but cannot be opened for {what} now "
                    "(in use by another program, such as the running phone?)"
                )
            elif index is None:
                problems.append(f"audio.{key}: no {what} device matches {wanted!r} ({what} devices here: {here})")
        out[key] = entry

    # The audio plugin's tables ([mixer], [sounds]; see softphone_audio): read here so the doctor can check
    # devices without loading plugins or starting anything.
    mixer = config.raw.get("mixer", {}) if isinstance(config.raw.get("mixer"), dict) else {}
    sounds = config.raw.get("sounds", {}) if isinstance(config.raw.get("sounds"), dict) else {}
    playback = out["playback_device"].get("device")
    entry = {"configured": mixer.get("device", "")}
    try:
        device = alsa.find_control_device(str(mixer.get("device", "")), alsa.control_device_for(playback))
        play, cap = alsa.pick_controls(
            device, alsa.controls(device), str(mixer.get("playback_control", "")), str(mixer.get("capture_control", ""))
        )
        entry.update(found=True, device=device, playback_control=play.name, capture_control=cap.name if cap else None)
    except alsa.AlsaError as e:
        entry.update(found=False, error=str(e))
        problems.append(f"mixer: {e}")
    out["mixer"] = entry

    ring = str(sounds.get("ring_device", ""))
    device = alsa.find_pcm(ring) if ring and ring != "headset" else playback
    if not ring or ring == "headset" or (device is not None and device == playback):
        out["ring_device"] = {"configured": ring, "found": True, "device": "headset (through PJSUA2)"}
    else:
        out["ring_device"] = {"configured": ring, "found": device is not None, "device": device}
        if device is None:
            playable = [n for n, _, o in pj_devices if o] or [p.name for p in pcms if p.io != "Input" and p.name != "null"]
            here = ", ".join(playable) or "none"
            problems.append(f"sounds.ring_device: no ALSA PCM matches {ring!r} (PCMs here: {here})")
    return out


# --- the registrar ---------------------------------------------------------------------------------------


def check_registrar(config: cfg.Config, timeout: float = OPTIONS_TIMEOUT) -> dict[str, Any]:
    account = config.account
    hostport = cfg.registrar_hostport(account.registrar)
    host, port = _split_hostport(hostport, 5061 if account.transport == "tls" else 5060)
    result: dict[str, Any] = {"target": f"{host}:{port}", "transport": account.transport, "ok": False}
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as e:
        result.update(method="DNS (A/AAAA)", error=f"{host} does not resolve: {e}")
        return result
    family, _, _, _, address = infos[0]
    result["address"] = address[0]
    if account.transport == "udp":
        result["method"] = "SIP OPTIONS over UDP"
        return {**result, **_options(family, address, host, port, account.user, config.domain, timeout)}
    result["method"] = f"TCP connect (the account uses {account.transport}; no SIP sent)"
    started = time.monotonic()
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(address)
    except OSError as e:
        result["error"] = f"no TCP connection: {e}"
        return result
    result.update(ok=True, rtt_ms=round((time.monotonic() - started) * 1000, 1))
    return result


def _split_hostport(hostport: str, default_port: int) -> tuple[str, int]:
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if hostport.count(":") == 1:
        host, port = hostport.split(":")
        return host, int(port)
    return hostport, default_port


def _options(family: int, address: Any, host: str, port: int, user: str, domain: str, timeout: float) -> dict[str, Any]:
    """One OPTIONS request (RFC 3261 11), retransmitted after 0.5 and 1.5 s as UDP's timer A does."""
    tag, branch, call_id = (f"{random.getrandbits(64):x}" for _ in range(3))
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect(address)
        local_ip, local_port = s.getsockname()[:2]
        local = f"[{local_ip}]:{local_port}" if ":" in local_ip else f"{local_ip}:{local_port}"
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        request = (
            f"OPTIONS sip:{target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{domain}>;tag={tag}\r\n"
            f"To: <sip:{target}>\r\n"
            f"Call-ID: {call_id}@firmware-app-doctor\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Accept: application/sdp\r\n"
            f"User-Agent: firmware-app/{__version__} doctor\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        started = time.monotonic()
        sends = [0.0, 0.5, 1.5]  # seconds after the first send
        while (elapsed := time.monotonic() - started) < timeout:
            if sends and elapsed >= sends[0]:
                sends.pop(0)
                s.sendall(request)
            s.settimeout(max(min(sends[0] if sends else timeout, timeout) - elapsed, 0.01))
            try:
                reply = s.recv(65535).decode(errors="replace")
            except TimeoutError:
                continue
            except OSError as e:  # ICMP port unreachable, on a connected UDP socket
                return {"error": f"no SIP answer ({e.strerror or e})"}
            status = reply.split("\r\n", 1)[0]
            if status.startswith("SIP/2.0 ") and f"z9hG4bK{branch}" in reply:
                return {"ok": True, "status": status[8:], "rtt_ms": round((time.monotonic() - started) * 1000, 1)}
    return {"error": f"no SIP answer within {timeout:.0f} s"}


# --- for people ------------------------------------------------------------------------------------------


def format_text(report: dict[str, Any]) -> str:
    lines = [f"firmware-app {report['firmware_app']} doctor, configuration {report['config']['path']}", ""]
    pj = report["pjsua2"]
    if not pj.get("installed"):
        lines.append(f"PJSUA2      not installed ({pj.get('error')})")
    elif "version" not in pj:
        lines.append(f"PJSUA2      does not start: {pj.get('error')}")
    else:
        backends = ", ".join(pj["sound_backends"]) or "none (built without sound: calls use the null device)"
        lines.append(f"PJSUA2      {pj['version']}, sound backend: {backends}")
        usable = [d["name"] for d in pj["devices"] if d["inputs"] or d["outputs"]]
        lines.append(f"            devices it can open: {', '.join(usable) or 'none'}")
    a = report["alsa"]
    if not a["available"]:
        lines.append("ALSA        alsa-lib is not installed")
    else:
        cards = [f"{c['index']}: {c['id']} ({c['name']})" for c in a["cards"]]
        lines.append(f"ALSA cards  {'; '.join(cards) or 'none'}")
        width = max((len(p["name"]) for p in a["pcms"]), default=0)
        for i, p in enumerate(a["pcms"]):
            io = f" [{p['io'].lower()} only]" if p["io"] else ""
            lines.append(f"{'ALSA PCMs' if i == 0 else '':<12}{p['name']:<{width}}  {p['description']}{io}")
        for device, controls in a["mixers"].items():
            if isinstance(controls, dict):
                text = controls["error"]
            else:
                text = ", ".join(f"{c['name']} ({_caps(c)})" for c in controls) or "no controls"
            lines.append(f"{'mixers' if device == next(iter(a['mixers'])) else '':<12}{device}: {text}")
    if "configured" in report:
        lines.append("configured")
        for key, entry in report["configured"].items():
            configured = repr(entry.get("configured", ""))
            if entry.get("found"):
                detail = entry.get("device") or ""
                if key == "mixer":
                    detail += f" {entry['playback_control']}" + (f" / {entry['capture_control']}" if entry["capture_control"] else "")
                lines.append(f"  {key:<16}{configured} -> {detail}  OK")
            else:
                lines.append(f"  {key:<16}{configured}  NOT FOUND{': ' + entry['error'] if entry.get('error') else ''}")
    for name, section in report.get("plugins", {}).items():
        for i, line in enumerate(section.get("lines") or ["nothing found"]):
            lines.append(f"{name if i == 0 else '':<12}{line}")
    r = report.get("registrar")
    if r:
        if r["ok"]:
            answer = f"answers ({r['status']}, {r['rtt_ms']} ms)" if "status" in r else f"reachable ({r['rtt_ms']} ms)"
            lines.append(f"registrar   {r['target']}, {r['method']}: {answer}")
        else:
            lines.append(f"registrar   {r['target']}, {r.get('method', '')}: {r['error']}")
    lines.append("")
    if report["ok"]:
        lines.append("result      OK")
    else:
        lines.append(f"result      {len(report['problems'])} problem(s):")
        lines += [f"  - {p}" for p in report["problems"]]
    return "\n".join(lines)


def _caps(control: dict[str, Any]) -> str:
    caps = [
        label
        for key, label in (
            ("playback_volume", "playback volume"),
            ("playback_switch", "playback switch"),
            ("capture_volume", "capture volume"),
            ("capture_switch", "capture switch"),
        )
        if control[key]
    ]
    return ", ".join(caps) or "other"
