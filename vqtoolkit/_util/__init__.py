"""Private helpers every layer may use: atomic writes, locks, memory checks, CPU deadlines, module modes.

Nothing here knows what a component is; nothing outside vqtoolkit should import it.
"""
