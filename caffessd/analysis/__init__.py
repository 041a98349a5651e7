"""Fitting a net to its data, before any training: which ground-truth boxes
the net's priors can match, priors fitted to the boxes, and dataset checks.

    netpriors    a net's PriorBox layers, priors and matching rule, at its data layer's input size
    groundtruth  dataset records -> boxes as the train net sees them (normalised, after the resize)
    coverage     the SSD fork's matching (caffessd.boxmatch) replayed over a dataset; per-object results
    summary      coverage figures: per feature layer, by object size, unmatched objects
    plots        the pictures: best IoU by object size, object shapes over the priors' shapes
    fastiou      best IoU of boxes against a prior grid without building it (for the search)
    suggest      min_size/max_size/aspect_ratio fitted to the boxes, as gen-model flags
    lint         every image and box checked, one line per problem, streaming

May import: the core (boxmatch, priorbox, net, protoio), util/, datasets/ and
generators/ (gen-model's own prior rule); matplotlib lazily (plots). Used by
the commands fit-priors, lint-dataset and make-lmdb, and by train."""
