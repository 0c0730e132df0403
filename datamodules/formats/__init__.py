"""Real-data sources and writers: manifests, COCO/Karpathy, HF on disk, WebDataset.

Import from the submodules (``manifest``, ``coco``, ``hf``, ``shards``,
``writers``) so that reading one format never imports another's library.
"""
