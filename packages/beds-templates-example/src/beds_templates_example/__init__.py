"""SPEW, the BEDS showcase domain: template declarations and DBA schema, no core code."""
