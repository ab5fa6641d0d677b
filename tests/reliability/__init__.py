"""Reliability and security tests: faults, load, hostile input, access, persistence."""
