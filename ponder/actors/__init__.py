"""Engines behind two small protocols, the replica actors that host them, and the pools."""
