# hal_esp32 under the unix port against a fake `machine` (fake_esp32/):
#
#     micropython -X heapsize=64K tests/firmware/mp_hal_esp32.py BUILD_DIR FAKE_DIR TMP_DIR
#
# Prints PASS/FAIL lines like mp_unit.py; exits 1 on any failure.

import sys

sys.path[:0] = [sys.argv[2], sys.argv[1]]
TMP = sys.argv[3]

import struct  # noqa: E402

import hal_esp32  # noqa: E402
import machine  # noqa: E402  (the fake)

_failed = 0


def eq(a, b, what=""):
    if a != b:
        raise AssertionError(f"{what}: {a!r} != {b!r}")


def near(a, b, tol, what=""):
    if abs(a - b) > tol:
        raise AssertionError(f"{what}: {a!r} not within {tol} of {b!r}")


def run(fn):
    global _failed
    try:
        fn()
        print("PASS hal_esp32." + fn.__name__)
    except Exception as e:
        _failed += 1
        print(f"FAIL hal_esp32.{fn.__name__}: {e!r}")


h = hal_esp32.Hal()


def peripherals_as_documented():
    eq(h.link.uid, 2, "UART id")
    eq(h.link.baud, 115200, "baud")
    eq(machine.pins[25].num, 25, "lamp pin")
    eq(h._pwm.freq, 2000, "PWM frequency (>= 1.25 kHz)")
    eq(machine.pins[26].mode, machine.Pin.OUT, "amp pin is an output")
    eq(machine.pins[26].v, 0, "amp off at boot")
    eq((0x23, None, b"\x10") in machine.i2c_writes, True, "BH1750 continuous mode")
    eq((0x18, 0x20, b"\x57") in machine.i2c_writes, True, "LIS3DH on")


def identity_and_link():
    eq(h.board_id(), "240ac4123456", "board id")
    h.link_write(b"\x00\x01\x00")
    eq(bytes(h.link.out), b"\x00\x01\x00", "bytes to the UART")


def outputs():
    h.lamp(12345, 1800)
    eq(h._pwm.duty, 12345, "duty")
    h.amp(True)
    eq(machine.pins[26].v, 1, "amp on")
    h.amp(False)
    eq(machine.pins[26].v, 0, "amp off")


def digital_inputs():
    machine.pins[34].v = 1
    eq(h.door(), 1, "door open")
    machine.pins[35].v = 0
    eq(h.mains(), 1, "opto low = mains present")
    machine.pins[35].v = 1
    eq(h.mains(), 0, "no mains")
    for p in (32, 33, 27, 14):
        machine.pins[p].v = 0
    machine.pins[33].v = 1
    machine.pins[14].v = 1
    eq(h.din(), 0b1010, "din bits")


def lux_and_failed_sensor():
    machine.i2c_regs[(0x23, None)] = bytes([0x01, 0x2C])  # 300 counts
    near(h.lux(), 250.0, 0.01, "lux = raw / 1.2")
    del machine.i2c_regs[(0x23, None)]
    eq(h.lux(), 0.0, "dead sensor reads dark")
    eq(h.sensor_errors > 0, True, "counted")


def tilt():
    machine.i2c_regs[(0x18, 0xA8)] = struct.pack("<hhh", 0, 0, 16000)
    near(h.tilt_deg(), 0.0, 0.01, "upright")
    machine.i2c_regs[(0x18, 0xA8)] = struct.pack("<hhh", 16000, 0, 16000)
    near(h.tilt_deg(), 45.0, 0.01, "45 degrees")
    del machine.i2c_regs[(0x18, 0xA8)]
    near(h.tilt_deg(), 45.0, 0.01, "keeps the last good reading")


def temperature():
    machine.adc_uv[39] = 1650000  # divider midpoint: NTC = 10 k = 25 C
    near(h.temp_c(), 25.0, 0.01, "25 C")
    machine.adc_uv[39] = 1000000  # lower voltage, lower resistance: warmer
    eq(h.temp_c() > 25.0, True, "warmer")
    machine.adc_uv[39] = 0
    eq(h.temp_c(), -273.15, "open/short is impossible, not plausible")


def power_and_energy():
    machine.adc_uv[36] = 100000
    near(h.power_w(), 0.0, 0.001, "offset = 0 W")
    machine.adc_uv[36] = 3000000
    near(h.power_w(), 150.0, 0.001, "full scale")
    machine.adc_uv[36] = 50000
    eq(h.power_w(), 0.0, "never negative")
    eq(h.energy_wh() >= 0.0, True, "energy")


def watchdog():
    h.wdt_feed()  # before start: nothing to feed, must not fail
    h.wdt_start(4000)
    eq(machine.wdt[-1].timeout, 4000, "timeout")
    h.wdt_feed()
    h.wdt_feed()
    eq(machine.wdt[-1].feeds, 2, "feeds")


def settings_file():
    hal_esp32._SETTINGS = TMP + "/settings.json"
    hal_esp32._SETTINGS_TMP = TMP + "/settings.tmp"
    eq(h.load_settings(), None, "no file yet")
    h.save_settings('{"heartbeat_ms": 500}')
    eq(h.load_settings(), '{"heartbeat_ms": 500}', "round trip")
    h.save_settings('{"heartbeat_ms": 600}')
    eq(h.load_settings(), '{"heartbeat_ms": 600}', "replaced")


def no_panel_tasks():
    eq(h.tasks(None), [], "no extra tasks on the board")


def reset_calls_machine():
    h.reset()  # the fake returns; the real one never does
    eq(len(machine.resets), 1, "machine.reset called")


for f in (peripherals_as_documented, identity_and_link, outputs, digital_inputs,
          lux_and_failed_sensor, tilt, temperature, power_and_energy, watchdog,
          settings_file, no_panel_tasks, reset_calls_machine):
    run(f)
print(f"DONE failed={_failed}")
sys.exit(1 if _failed else 0)
