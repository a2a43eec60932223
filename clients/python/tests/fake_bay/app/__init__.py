"""A stand-in for Bay's package layout, written from Berth's copy of Bay's
driver contract: just the module names, the `K8sDriver` global and the
cached `get_driver()` that `berth_client.bay.install()` relies on."""
