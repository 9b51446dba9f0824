"""`python -m app.cli`, as the tests and the benchmarks start it."""

from app.cli import main

if __name__ == "__main__":
    main()
