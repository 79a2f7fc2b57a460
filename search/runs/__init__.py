"""The library behind the ``prunebench`` commands: runs, and the folders they write.

- :mod:`.folders`: reading run folders (or a study in a storage) into :class:`RunData`, merging
  them on common axes.
"""
