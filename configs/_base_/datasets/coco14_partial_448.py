# MS-COCO 2014 with partial training labels, 448 x 448 (official
# DualCoOp / PositiveCoOp protocol): train on train2014 (82,081 images with
# at least one annotation) with a seeded Bernoulli(p) mask of known labels,
# test on the complete labels of val2014 (40,137 images).
# the official image pipelines (train_pipeline, test_pipeline, img_size)
_base_ = ['./pipelines/official_recipe_448.py']

dataset_type = 'COCO2014MultiLabel'
data_root = 'data/coco'

train_dataloader = dict(
    batch_size=32,
    num_workers=8,
    persistent_workers=True,
    # augmentations drawn from (seed, epoch, index): the same for any
    # num_workers and after a resume (mmcoop/datasets/samplers.py)
    sampler=dict(type='EpochSeededSampler', shuffle=True),
    dataset=dict(
        type='PartialLabelDataset',
        # fraction of training labels that stay known (0.1 ... 0.9)
        known_proportion=0.5,
        # official: independent Bernoulli(p) per (image, class)
        mode='bernoulli',
        # seed of the mask (the official mask is unseeded)
        seed=0,
        # None: drawn from the seed; PartialLabelMaskHook saves it to
        # {work_dir}/partial_labels/. A path: load it (or save it there).
        mask_file=None,
        dataset=dict(
            type=dataset_type,
            data_root=data_root,
            split='train',
            pipeline={{_base_.train_pipeline}})),
)

val_dataloader = dict(
    batch_size=100,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='val',
        test_mode=True,
        pipeline={{_base_.test_pipeline}}),
)
# mAP, CP/CR/CF1 and OP/OR/OF1 (threshold 0.5) with the official formulas
val_evaluator = dict(type='PartialMultiLabelMetric', thr=0.5)

# The protocol has no separate validation split: the official code
# validates (and selects its best epoch) on the test split. mmcoop reports
# the final epoch; validation during training is for monitoring only.
test_dataloader = val_dataloader
test_evaluator = val_evaluator

# save the partial-label mask of the training set into the work dir
# (MMCoopRunner adds FiniteCheckHook and RNGStateHook by itself)
custom_hooks = [dict(type='PartialLabelMaskHook')]
