"""A trained model on your own images: the files PaddleSeg's predict writes, for a folder that may be
long, and a run that may be stopped and started again.

The steps of PaddleSeg's deploy predictor (deploy/python/infer.py), one module each:

    inputs.py      the images to predict: files, folders and list files; decoding one
    predictor.py   the model: preprocess (``prepare``), run and postprocess (``predict``)
    outputs.py     the files written for each image (save), and the settings a save folder holds
    pipeline.py    the run: decoding ahead of the network and writing behind it, on threads

For each input image ``<name>`` (its path relative to the folder or list file it came from, without
the extension; a single file: its name) the save folder receives

    <name>.png                           train ids, 8-bit: what evaluate_cityscapes.py writes
    pseudo_color_prediction/<name>.png   the train ids as a palette PNG in the class colours
    added_prediction/<name>.jpg          the image blended with the class colours
    label_ids/<name>.png                 (asked for) the class set's label values: Cityscapes label ids
    confidence/<name>.png                (asked for) the largest softmax probability, 0..1 as 0..255
    entropy/<name>.png                   (asked for) the softmax's entropy over log(classes), 0..1 as 0..255

Every file is written to a temporary name and renamed: a run stopped midway leaves complete files
only, and the next run with the same settings predicts only the images missing one of theirs.
"""


class PredictionError(ValueError):
    """Nothing can be predicted as asked: one line per problem, naming the flag or file at fault."""
