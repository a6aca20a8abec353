"""Run a WSGI app as a cluster of single-threaded waitress processes."""
