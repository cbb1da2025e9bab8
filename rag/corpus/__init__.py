"""Getting corpora onto disk and reading them back: manifests, folders, images, Wikipedia."""
