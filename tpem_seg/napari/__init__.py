"""The tpem-seg napari plugin (npe2): a segmentation dock widget, a reader for tpem-seg outputs,
a writer for labels, and the simulator as sample data.

Install with ``pip install 'tpem-seg[napari]'``; napari finds it through the ``napari.manifest``
entry point (``napari.yaml`` here). Nothing is imported from napari or Qt until a contribution
is used.
"""
