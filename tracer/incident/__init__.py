"""Incident bundles: what `brtrace watch` records, unasked, when a critical
finding opens on a bridge.

The pieces are plain objects the daemon calls (each second, on open, on
close), independent of its run loop:

  store     the bundle directory: caps, rotation, permissions, incident.json;
            never raises on a full or read-only disk
  timeline  the last minutes of per-second records, bounded in memory
  command   the operator's --on-incident command: own process group, timeout
  kmsg      the kernel log (/dev/kmsg), bounded, from before the trigger
  capture   frames of the involved ports into a pcapng file, bounded

`brtrace incidents` (tracer/views/incidents.py) reads the bundles back.
"""
