"""Process identity as (pid, start time): a recycled pid is not the process we recorded."""

from __future__ import annotations

import os

import psutil


def start_time(pid: int) -> float | None:
    try:
        return round(psutil.Process(pid).create_time(), 2)
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def me() -> tuple[int, float | None]:
    pid = os.getpid()
    return pid, start_time(pid)


def alive(pid: int, started: float | None) -> bool:
    """True while the process recorded as (pid, started) still runs."""
    if started is None:
        return psutil.pid_exists(pid)
    now = start_time(pid)
    if now is None or abs(now - started) > 0.05:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
