# A stand-in for the ESP32 `machine` module, so hal_esp32 runs under the
# unix port (a machine.py on sys.path overrides the unix port's small
# built-in one). Records what the HAL does; tests set what it reads.

pins = {}  # number -> Pin
adc_uv = {}  # pin number -> microvolts read_uv() returns
i2c_regs = {}  # (addr, reg or None) -> bytes
i2c_writes = []
wdt = []  # WDT instances
resets = []


def unique_id():
    return b"\x24\x0a\xc4\x12\x34\x56"


def reset():
    resets.append(1)


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 1

    def __init__(self, num, mode=-1, pull=-1, value=None):
        self.num = num
        self.mode = mode
        self.pull = pull
        self.v = 0 if value is None else value
        pins[num] = self

    def value(self, *x):
        if x:
            self.v = x[0]
            return None
        return self.v


class PWM:
    def __init__(self, pin, freq=0, duty_u16=0):
        self.pin = pin
        self.freq = freq
        self.duty = duty_u16

    def duty_u16(self, d=None):
        if d is None:
            return self.duty
        self.duty = d
        return None


class ADC:
    ATTN_11DB = 3

    def __init__(self, pin, atten=0):
        self.pin = pin
        self.atten = atten

    def read_uv(self):
        return adc_uv.get(self.pin.num, 0)


class I2C:
    def __init__(self, bus, scl=None, sda=None, freq=0):
        self.bus = bus

    def writeto(self, addr, buf):
        i2c_writes.append((addr, None, bytes(buf)))
        return 1

    def writeto_mem(self, addr, reg, buf):
        i2c_writes.append((addr, reg, bytes(buf)))

    def readfrom_into(self, addr, buf):
        data = i2c_regs.get((addr, None))
        if data is None:
            raise OSError(19)  # ENODEV: nothing answers at that address
        buf[:] = data

    def readfrom_mem_into(self, addr, reg, buf):
        data = i2c_regs.get((addr, reg))
        if data is None:
            raise OSError(19)
        buf[:] = data


class UART:
    def __init__(self, uid, baud, tx=None, rx=None, rxbuf=0, txbuf=0, timeout=0,
                 timeout_char=0):
        self.uid = uid
        self.baud = baud
        self.out = bytearray()

    def write(self, buf):
        self.out.extend(buf)
        return len(buf)


class WDT:
    def __init__(self, timeout=5000):
        self.timeout = timeout
        self.feeds = 0
        wdt.append(self)

    def feed(self):
        self.feeds += 1
