"""``timerfd`` through libc: a one-shot timer as a descriptor that ``poll`` can wait on."""

from __future__ import annotations

import ctypes
import os

from tir_agent.sandbox.worker.procs import libc

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC


class Timespec(ctypes.Structure):
    """``struct timespec``."""

    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class Itimerspec(ctypes.Structure):
    """``struct itimerspec``."""

    _fields_ = [("it_interval", Timespec), ("it_value", Timespec)]


def itimerspec(seconds: float) -> Itimerspec:
    """A one-shot timer ``seconds`` from now (0: disarmed)."""
    spec = Itimerspec()
    spec.it_value.tv_sec = int(seconds)
    spec.it_value.tv_nsec = int((seconds - int(seconds)) * 1e9)
    if seconds > 0 and not spec.it_value.tv_sec and not spec.it_value.tv_nsec:
        spec.it_value.tv_nsec = 1
    return spec


def timerfd() -> int:
    """A new non-blocking monotonic timerfd (disarmed)."""
    fd = int(libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "timerfd_create failed")
    return fd


def settime(fd: int, spec: Itimerspec) -> None:
    """Arm (or, with ``itimerspec(0)``, disarm) the timer ``fd``."""
    libc.timerfd_settime(fd, 0, ctypes.byref(spec), None)
