"""The entry points: the `chatlake` command (`main.py`), `chatlake up`'s launcher and
supervisor (`launcher.py`), the demo tenant's seeding (`demo.py`) and the guard every
child of `up` runs under (`guard.py`). The one layer that may import every other."""
