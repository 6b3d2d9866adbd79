"""The command-line interface: click commands only.

Each command parses its options into plain values, calls a library function that
returns data, and renders it. Nothing outside this package imports click.
"""
