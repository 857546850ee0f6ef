"""CALGON: long operations submitted for a ticket and run in the background (docs/calgon.md)."""
