"""_wire layer: the contract between the master and its workers (messages, meter page, child spec).

Below both ``_core`` (the master's side) and ``_child`` (the worker's side), so
neither imports the other to know what crosses the Pipe or the shared page.
"""
