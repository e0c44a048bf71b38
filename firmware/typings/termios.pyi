# The MicroPython unix port's `termios` (checked on 1.29: setraw, tcgetattr,
# tcsetattr, TCSANOW, baud constants). The ESP32 stubs have no termios
# because the board has none; only hal_sim imports it.

from typing import Any

TCSANOW: int
B9600: int
B57600: int
B115200: int
B230400: int
B460800: int
B921600: int

def setraw(fd: int, /) -> None: ...
def tcgetattr(fd: int, /) -> list[Any]: ...
def tcsetattr(fd: int, when: int, attrs: list[Any], /) -> None: ...
