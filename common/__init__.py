"""What every layer may use: atomic writes, the error base, digests, the version, the one comparator.

Imports nothing from compress/, targets/, bench/, models/ or runtime/, and nothing heavy (numpy at most)."""
