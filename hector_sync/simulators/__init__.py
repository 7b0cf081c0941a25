"""C2 ITSM and Hector simulators: real HTTP servers on loopback for tests, benchmarks and the demo.

sample_data (the deterministic inventory), c2_app / hector_app (the two APIs), table (Hector's
indexed rows), faults (switches, statistics, /_sim admin), wire (shared HTTP plumbing),
serve (start_simulators, serve_forever); `python -m hector_sync.simulators` runs them standalone.
"""
