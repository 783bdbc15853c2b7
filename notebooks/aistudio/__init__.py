"""What the AI Studio notebooks' cells call, one module per job; tested by tests/notebooks/test_notebooks.py.

- ``commands``: ``run`` one of the project's command lines with this kernel's interpreter, from
  the repo root, its output streamed into the notebook; a failure raises ``CommandFailed``.
- ``environment``: its ``report`` (Paddle, the GPU, the free disk) before anything long starts,
  and ``free_bytes``.
- ``datasets``: the datasets AI Studio mounts as zip archives, found (``find_archives``) and
  extracted into the layout the scripts read (``extract_archives``; a re-run extracts only what
  is missing or incomplete); ``check_extracted``, ``check_layout`` and ``check_translated`` (the
  CycleGAN images of pixel adaptation) say whether the scripts will find what they read.
- ``weights``: the authors' ``.pth`` files found (``find_file``) and converted to ``.pdparams``,
  once (``convert_weights``).
- ``training``: what a run looks like: ``read_metrics``, ``plot_losses`` (AdaptSegNet's losses,
  or the weak-label ones with ``panels=WEAK_LABEL_PANELS``), ``latest_picture``.
- ``evaluation``: what its evaluation looks like: ``read_snapshot_table``,
  ``plot_snapshot_miou``, ``comparison_pictures``, ``show_pictures``.
- ``demo``: DEMO mode's stand-ins for AI Studio's archives and the authors' weights, so that
  every step above runs on a CPU in about a minute.

Committed notebooks carry no outputs: ``python -m notebooks.clear_outputs notebooks/*.ipynb``.
"""
