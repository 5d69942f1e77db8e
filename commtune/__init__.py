"""commtune: auto-tune the communication knobs of data-parallel training.

Data flow: model profile + cluster spec + knobs -> simulator (``simulators``)
or live probe -> metrics -> search -> profile -> runtime / exporters.
"""
__version__ = "0.1.0"
