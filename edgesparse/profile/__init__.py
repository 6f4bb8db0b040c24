"""Profiler: footprint from the flatbuffer, latency from the device runner, reports."""
