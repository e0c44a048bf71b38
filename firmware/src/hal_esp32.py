# ESP32 board HAL. Pin map and calibration constants are documented in
# docs/firmware.md ("ESP32 pins and peripherals"); change them there too.
# Only ADC1 pins are used for analogue inputs: ADC2 is unusable while the
# radio is on.

import math
import os
import struct
from binascii import hexlify
from time import ticks_diff, ticks_ms

import machine
from machine import ADC, I2C, PWM, UART, WDT, Pin
from micropython import const

TYPE_CHECKING = const(False)
if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

    from halapi import Hal as _HalApi

# Link to the edge computer: UART2, 115200 8N1.
_UART_ID = const(2)
_UART_TX = const(17)
_UART_RX = const(16)
_BAUD = const(115200)

_PIN_LAMP = const(25)  # LEDC PWM to the LED driver's dimming input
# 2 kHz: above the 1.25 kHz where IEEE 1789 sees low flicker risk even at full
# modulation, and within the 0.2-3 kHz that common LED drivers accept.
_PWM_HZ = const(2000)
_PIN_AMP = const(26)  # audio amplifier enable, active high
_PIN_SDA = const(21)
_PIN_SCL = const(22)
_PIN_DOOR = const(34)  # reed switch, external pull-up: 1 = door open
_PIN_MAINS = const(35)  # mains-present optocoupler pulls low: 0 = mains present
_PIN_PWR = const(36)  # ADC1_CH0: power transducer output
_PIN_NTC = const(39)  # ADC1_CH3: NTC divider
_DIN_PINS = (32, 33, 27, 14)  # bit 0..3 of digital_inputs.levels

_ADDR_BH1750 = const(0x23)  # ambient light, continuous high-res mode
_ADDR_LIS3DH = const(0x18)  # accelerometer, for pole tilt

# Power transducer: linear, 100 mV at 0 W to 3000 mV at 150 W (calibrate per
# board by measuring two known loads and adjusting both constants).
_P_OFFSET_MV = 100.0
_P_W_PER_MV = 150.0 / 2900.0
# NTC: 10 k at 25 C, B = 3950, at the bottom of a divider with 10 k to 3.3 V.
_NTC_R0 = 10000.0
_NTC_B = 3950.0
_NTC_RFIX = 10000.0
_VCC_MV = 3300.0

_SETTINGS = "/settings.json"
_SETTINGS_TMP = "/settings.tmp"


class Hal:
    def __init__(self) -> None:
        self.link = UART(_UART_ID, _BAUD, tx=_UART_TX, rx=_UART_RX,
                         rxbuf=1024, txbuf=1024, timeout=0, timeout_char=0)
        self._pwm = PWM(Pin(_PIN_LAMP), freq=_PWM_HZ, duty_u16=0)
        self._amp = Pin(_PIN_AMP, Pin.OUT, value=0)
        self._door = Pin(_PIN_DOOR, Pin.IN)
        self._mains = Pin(_PIN_MAINS, Pin.IN)
        self._din = [Pin(p, Pin.IN, Pin.PULL_UP) for p in _DIN_PINS]
        self._adc_p = ADC(Pin(_PIN_PWR), atten=ADC.ATTN_11DB)
        self._adc_t = ADC(Pin(_PIN_NTC), atten=ADC.ATTN_11DB)
        self._i2c = I2C(0, scl=Pin(_PIN_SCL), sda=Pin(_PIN_SDA), freq=400000)
        self._b2 = bytearray(2)  # preallocated I2C buffers: no allocation per read
        self._b6 = bytearray(6)
        self._wdt: WDT | None = None
        self._lux = 0.0
        self._tilt = 0.0
        self._p = 0.0
        self._wh = 0.0
        self._t_p = ticks_ms()
        self.sensor_errors = 0
        self._init_sensors()

    def _init_sensors(self) -> None:
        try:
            self._i2c.writeto(_ADDR_BH1750, b"\x10")  # continuous H-resolution
            self._i2c.writeto_mem(_ADDR_LIS3DH, 0x20, b"\x57")  # 100 Hz, XYZ on
        except OSError:
            self.sensor_errors += 1

    def board_id(self) -> str:
        return hexlify(machine.unique_id()).decode()

    def link_write(self, buf: bytes) -> None:
        # UART.write copies into the driver's TX ring and returns.
        self.link.write(buf)

    def lamp(self, duty: int, level_c: int) -> None:
        self._pwm.duty_u16(duty)

    def amp(self, on: bool) -> None:
        self._amp.value(1 if on else 0)

    def lux(self) -> float:
        try:
            self._i2c.readfrom_into(_ADDR_BH1750, self._b2)
            self._lux = ((self._b2[0] << 8) | self._b2[1]) / 1.2
        except OSError:
            # A dead light sensor reads as dark, so fail-safe keeps the lamp lit.
            self.sensor_errors += 1
            self._lux = 0.0
        return self._lux

    def temp_c(self) -> float:
        mv = self._adc_t.read_uv() / 1000.0
        if mv <= 1.0 or mv >= _VCC_MV - 1.0:
            return -273.15  # open or shorted NTC: an impossible value, not a guess
        r = _NTC_RFIX * mv / (_VCC_MV - mv)
        return 1.0 / (1.0 / 298.15 + math.log(r / _NTC_R0) / _NTC_B) - 273.15

    def door(self) -> int:
        return self._door.value()

    def tilt_deg(self) -> float:
        try:
            self._i2c.readfrom_mem_into(_ADDR_LIS3DH, 0x28 | 0x80, self._b6)
            x, y, z = struct.unpack("<hhh", self._b6)
            g = math.sqrt(x * x + y * y + z * z)
            if g > 0:
                self._tilt = math.degrees(math.acos(max(-1.0, min(1.0, z / g))))
        except OSError:
            self.sensor_errors += 1
        return self._tilt

    def mains(self) -> int:
        return 1 - self._mains.value()

    def din(self) -> int:
        v = 0
        for i in range(len(self._din)):
            v |= self._din[i].value() << i
        return v

    def power_w(self) -> float:
        uv = 0
        for _ in range(8):  # average out ADC noise
            uv += self._adc_p.read_uv()
        p = (uv / 8000.0 - _P_OFFSET_MV) * _P_W_PER_MV
        p = p if p > 0.0 else 0.0
        now = ticks_ms()
        # Trapezoid between this sample and the last one.
        self._wh += (p + self._p) * 0.5 * ticks_diff(now, self._t_p) / 3600000.0
        self._t_p = now
        self._p = p
        return p

    def energy_wh(self) -> float:
        return self._wh

    def wdt_start(self, timeout_ms: int) -> None:
        self._wdt = WDT(timeout=timeout_ms)

    def wdt_feed(self) -> None:
        if self._wdt is not None:
            self._wdt.feed()

    def load_settings(self) -> str | None:
        try:
            with open(_SETTINGS) as f:
                return str(f.read())
        except OSError:
            return None

    def save_settings(self, text: str) -> None:
        # Write then rename: a power cut mid-write leaves the old file intact.
        with open(_SETTINGS_TMP, "w") as f:
            f.write(text)
        os.rename(_SETTINGS_TMP, _SETTINGS)

    def reset(self) -> None:
        machine.reset()

    def tasks(self, app: "Any") -> "list[Coroutine[Any, Any, None]]":
        return []

    def log(self, msg: str) -> None:
        print(msg)  # UART0 / USB console, not the link UART


if TYPE_CHECKING:
    def _conforms(h: Hal) -> _HalApi:
        return h  # mypy: the board implements the whole HAL interface
