"""Serverless runtime pieces (worker tree layout; handlers arrive with the serverless issue).

The runtime may import the core; the core never imports the runtime.
"""
