"""Untrusted input: the one gate every byte passes (photos, uploads, comp
images, files a listing or recording names).
"""
