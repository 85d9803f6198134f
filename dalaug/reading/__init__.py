"""The reading path: where samples are, how their bytes arrive, and whether DALI can take them.

- :mod:`~dalaug.reading.sources`: what the user passed as ``source`` becomes one :class:`Samples`
  table (an ImageFolder, ``(path, label)`` pairs, WebDataset shards on disk or in a bucket).
- :mod:`~dalaug.reading.webdataset`: each shard's tar headers indexed once and stored.
- :mod:`~dalaug.reading.workers`: worker processes that read and check bytes, off this process's GIL.
- :mod:`~dalaug.reading.reader`: each batch's reads run ahead and handed to DALI in order.
- :mod:`~dalaug.reading.integrity`: cheap checks that bytes can be handed to DALI's decoder.
- :mod:`~dalaug.reading.verification`: which samples DALI cannot decode, and why (``dalaug verify``).

Kept light: a read worker imports :mod:`dalaug.reading.workers` without torch or DALI.
"""
