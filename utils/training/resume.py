"""Whether a run starts or continues, and what a continued run must keep: the session's policy.

A continued run takes the recipe values its snapshot recorded (so that the same command continues
it, whatever the defaults are now), and refuses any other change to what it keeps (params.Param's
``keep``, the classes, the datasets' sizes): the data order and the schedule would differ from the
run it continues. A new run refuses a folder that holds another run.
"""
from dataset.classes import CITYSCAPES
from model import MODEL_ALIASES
from utils.files.checkpoint import CheckpointError
from utils.files.snapshots import STATE, SnapshotDir
from utils.files.weights import WeightsError, read_paddle_pickle
from utils.training.params import adopt_snapshot_settings, earlier_values, kept_values

DATA_SIZES = ("source_images", "target_images")


def adopt_settings(args, params):
    """Before the method is built, for --continue-train: the snapshot to continue's recipe values
    into ``args`` (flags given on the command line are checked against them later). Returns
    ({iteration: its state file, read}, a line for the log or None)."""
    snapshots = SnapshotDir(args.snapshot_dir, args.snapshot_prefix, parts=())
    wanted = [it for it in snapshots.complete() if args.start_iter in ("latest", it)]
    for iteration in reversed(wanted):
        try:
            saved = read_paddle_pickle(snapshots.files(iteration)[STATE])
        except WeightsError:
            continue  # the checkpointer says which snapshot is damaged and resumes an older one
        adopted = adopt_snapshot_settings(args, params, saved["extra"]["args"])
        if args.num_steps_stop > args.num_steps:
            raise CheckpointError("the snapshot's schedule ends at --num-steps {}, before --num-steps-stop {}: "
                                  "give --num-steps-stop {} (or less)".format(
                                      args.num_steps, args.num_steps_stop, args.num_steps))
        return {iteration: saved}, adopted
    return {}, None


def kept(args, params, method):
    """What a continued run must share with the snapshot: the kept settings, the classes, and the
    datasets' sizes (the data order is a permutation of each dataset)."""
    values = kept_values(args, params)
    values["classes"] = list(args.class_set.names)  # the classes, wherever the class file is
    values["model"] = MODEL_ALIASES.get(args.model, args.model)  # DeeplabMulti4 loads DeeplabMulti's keys
    values.update(source_images=len(method.source), target_images=len(method.target) if method.target is not None else 0)
    return values


def check_resumable(current, saved, params, settings=None):
    """Refuse to continue when ``current`` (kept) differs from the snapshot's ``saved``; a setting
    that snapshots written before it existed lack counts as its ``earlier`` value (the network: the
    snapshot's whole ``settings`` say, or DeeplabMulti, the only one before ADVENT)."""
    model = MODEL_ALIASES.get((settings or {}).get("model"), (settings or {}).get("model")) or "DeeplabMulti"
    saved = dict(dict(earlier_values(params), classes=list(CITYSCAPES.names), model=model), **saved)
    changed = ["--{} {} (snapshot: {})".format(k.replace("_", "-"), v, saved.get(k))
               for k, v in current.items() if k not in DATA_SIZES and saved.get(k) != v]
    changed += ["{} {} (snapshot: {})".format(k.replace("_", " "), current[k], saved.get(k))
                for k in DATA_SIZES if saved.get(k) != current[k]]
    if changed:
        raise CheckpointError("cannot continue exactly with changed settings: {}. Use the snapshot's values, "
                              "or start a new run from its weights with --restore-from.".format("; ".join(changed)))


def check_new_run(args, snapshots, parts):
    """Refuse to start a run where it would overwrite another; returns the iteration it starts at."""
    if snapshots.complete():
        raise CheckpointError("{} already holds snapshots of a run: add --continue-train to resume it, or "
                              "choose another --snapshot-dir".format(args.snapshot_dir))
    # A state file is written last: its snapshot was complete for the run that wrote it.
    other = sorted(it for it, kinds in snapshots.present().items() if STATE in kinds)
    if other:
        raise CheckpointError("{} holds snapshot {}, whose state file is there but not its {} file: another "
                              "kind of run wrote it (continue that with the flags it was started with: "
                              "--source-only, --use-weak-cw, ...), or it was damaged; starting over would "
                              "overwrite it. Choose another --snapshot-dir".format(
                                  args.snapshot_dir, snapshots.name(other[-1]), " or ".join(parts)))
    if args.restore_from is None and not args.from_scratch:
        raise CheckpointError("--continue-train: {} has no snapshot yet, and nothing to start a new run from: "
                              "give --restore-from (or --from-scratch)".format(args.snapshot_dir))
    start_iter = 0 if args.start_iter == "latest" else args.start_iter
    if start_iter >= args.num_steps_stop:
        raise CheckpointError("--start-iter {} is not before --num-steps-stop {}".format(start_iter, args.num_steps_stop))
    return start_iter
