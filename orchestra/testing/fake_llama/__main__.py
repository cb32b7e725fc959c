"""``python -m orchestra.testing.fake_llama``: serve the fake engine (see :mod:`.cli`)."""

from .cli import main

if __name__ == "__main__":
    main()
