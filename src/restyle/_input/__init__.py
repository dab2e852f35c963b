"""Untrusted input: the one gate every byte passes (photos, uploads, comp
images, files a listing or recording names).

- Photos: ``imaging`` is the front door (``load_photo``, ``decode``,
  ``Photo`` and the limits); ``limits`` (formats and bounds), ``reading``
  (paths, file objects, the deadline thread), ``jpeg`` (a JPEG's markers
  before decoding), ``pillow`` (Pillow's plugins used directly, orientation,
  the quiet turn), ``decoding`` (header checks, decode room), ``pixels`` (the
  working copy, an encoder's input), ``photo`` (the read-only ``Photo``),
  ``upload`` (a photo as a remote service takes it).
- Comp images: ``fetching`` (the ``Fetcher``), ``guard`` (what a fetch may
  reach), ``watchdog`` (fetches ended at their deadlines).
- ``vouched``: the local files a notebook may show.
"""
