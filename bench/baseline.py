"""The baseline: a plain PJSUA2 softphone, written the way the PJSUA2 book's Python sample does it.

One thread polls ``libHandleEvents(10)`` and drains a command queue between polls; everything that wants
to act on a call (a GPIO button's callback, the control input) puts a command on the queue. No plugins, no
asyncio, no configuration file: the least a developer would write to answer a call with a button.

    GPIOZERO_PIN_FACTORY=mock python bench/baseline.py --registrar 127.0.0.1:5060 --user 1010 --password pw

Commands, one per line on stdin (the "tiny control socket" of such a script):
    press              answer the ringing call (or hang up the current one), like the button
    pin PIN HOLD TAG   bench only: drive mock pin PIN low, HOLD ms later high; prints the edge times
    trim               bench only: glibc malloc_trim(0)
    quit               hang up, un-REGISTER and exit
It prints JSON lines on stdout: {"event": "registered", "code": 200} and {"edge": TAG, "press": t, "release": t}.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time

import pjsua2 as pj
from gpiozero import Button, Device

commands: queue.SimpleQueue[str] = queue.SimpleQueue()
calls: list[pj.Call] = []


def say(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class Call(pj.Call):
    def onCallState(self, prm):
        ci = self.getInfo()
        if ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            commands.put("forget")  # drop the Call on the loop thread, outside its own callback

    def onCallMediaState(self, prm):
        ci = self.getInfo()
        for i, mi in enumerate(ci.media):
            if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                media = self.getAudioMedia(i)
                adm = pj.Endpoint.instance().audDevManager()
                media.startTransmit(adm.getPlaybackDevMedia())
                adm.getCaptureDevMedia().startTransmit(media)


class Account(pj.Account):
    def onRegState(self, prm):
        say({"event": "registered" if prm.code // 100 == 2 and prm.expiration > 0 else "registration",
             "code": prm.code})

    def onIncomingCall(self, prm):
        call = Call(self, prm.callId)
        calls.append(call)
        ringing = pj.CallOpParam()
        ringing.statusCode = 180
        call.answer(ringing)


def press() -> None:
    """What the button does: answer a ringing call, else hang up the current one."""
    for call in calls:
        ci = call.getInfo()
        if ci.state in (pj.PJSIP_INV_STATE_INCOMING, pj.PJSIP_INV_STATE_EARLY):
            prm = pj.CallOpParam()
            prm.statusCode = 200
            call.answer(prm)
            return
    for call in calls:
        if call.isActive():
            call.hangup(pj.CallOpParam())
            return


def read_commands() -> None:
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "pin":  # the bench's stand-in for a finger on the button
            pin = Device.pin_factory.pin(int(words[1]))
            pressed = time.time()
            pin.drive_low()
            time.sleep(int(words[2]) / 1000)
            released = time.time()
            pin.drive_high()
            pin.clear_states()  # a MockPin keeps every change it saw; a real pin does not
            say({"edge": words[3], "press": pressed, "release": released})
        elif words[0] == "trim":  # bench only: free heap pages back to the system, to tell a leak from reuse
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        else:
            commands.put(words[0])
    commands.put("quit")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--registrar", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--pin", type=int, default=17)
    args = p.parse_args()

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.logConfig.level = 1
    cfg.logConfig.consoleLevel = 1
    ep.libInit(cfg)
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, pj.TransportConfig())
    ep.libStart()
    adm = ep.audDevManager()
    devices = [adm.getDevInfo(i) for i in range(adm.getDevCount())]
    if not any(d.inputCount for d in devices) or not any(d.outputCount for d in devices):
        adm.setNullDev()  # no sound card here; on the headset PJSUA opens ALSA's default device

    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:{args.user}@{args.registrar}"
    acfg.regConfig.registrarUri = f"sip:{args.registrar}"
    acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", args.user, 0, args.password))
    acc = Account()
    acc.create(acfg)

    button = Button(args.pin)
    button.when_pressed = lambda: commands.put("press")

    threading.Thread(target=read_commands, daemon=True).start()
    running = True
    while running:
        ep.libHandleEvents(10)
        while True:
            try:
                cmd = commands.get_nowait()
            except queue.Empty:
                break
            try:
                if cmd == "press":
                    press()
                elif cmd == "forget":
                    calls[:] = [c for c in calls if c.isActive()]
                elif cmd == "quit":
                    running = False
            except pj.Error as e:
                print(f"baseline: {cmd}: {e.info()}", file=sys.stderr)

    ep.hangupAllCalls()
    if acc.getInfo().regIsActive:
        acc.setRegistration(False)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and (any(c.isActive() for c in calls) or acc.getInfo().regIsActive):
        ep.libHandleEvents(20)
    calls.clear()
    button.close()
    del acc
    ep.libDestroy()
    del ep
    return 0


if __name__ == "__main__":
    sys.exit(main())
