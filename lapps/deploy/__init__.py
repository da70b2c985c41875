"""Hot deploy: LAppS's ``.lar`` archives dropped into ``directories.deploy``
are checked, unpacked into the applications folder and started (or replace
the running version) without a restart.

- :mod:`lapps.deploy.lar`: the archive format, read with every size, path
  and digest checked, and written (``lapps lar pack``);
- :mod:`lapps.deploy.signature`: optional Ed25519 signatures;
- :mod:`lapps.deploy.state`: the deployed descriptors, kept in a file of
  the deploy folder (the operator's config is never rewritten);
- :mod:`lapps.deploy.watch`: which archives have been written;
- :mod:`lapps.deploy.deployer`: the steps of one deploy, as a service;
- :mod:`lapps.deploy.commands`: ``lapps lar pack|list|verify|sign|keygen``.
"""
