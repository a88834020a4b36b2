"""Runs the shop on one machine: each replica a process on its own loopback IP.

Replica addresses mimic pods: ``127.<net>.<service>.<replica>``, all on the same
port, so nothing about a replica's address says which replica it is except its IP.
"""
