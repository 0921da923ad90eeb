"""Side-by-side benchmarks: this provider, dlt (the peer) and the engines' own SQL (the floor), on the same files.

``python -m benchmarks.run --help`` (or ``make bench``). Modules, one job each (``big_file.py`` is a separate
script: one 2 GB file's peak memory):

* :mod:`benchmarks.columns`: the change files' columns;
* :mod:`benchmarks.generate`: the change files of each kind (fixed seed, Parquet and CSV);
* :mod:`benchmarks.shapes`: the shapes measured, their data sets and jobs;
* :mod:`benchmarks.runners`: what a child process runs: ours and dlt, set up, then timed in process;
* :mod:`benchmarks.floors`: the floors, the engines' own SQL (and parallel downloads from S3);
* :mod:`benchmarks.child`: the child's entry point;
* :mod:`benchmarks.harness`: starts a child, measures its wall time and peak RSS;
* :mod:`benchmarks.launcher`: the small process that starts the child and reaps it (``ru_maxrss``);
* :mod:`benchmarks.s3`: moto's S3 server, with the files uploaded;
* :mod:`benchmarks.proxy`: a TCP proxy adding latency and a bandwidth cap (and, for the tests, cuts);
* :mod:`benchmarks.postgres`: Debian's PostgreSQL in a temporary folder;
* :mod:`benchmarks.verify`: the final tables must be identical before any figure is reported;
* :mod:`benchmarks.report`: JSON, markdown tables, PNG plot and the one-line summary;
* :mod:`benchmarks.run`: the command line.
"""
