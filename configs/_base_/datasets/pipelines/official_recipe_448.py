# The official DualCoOp / PositiveCoOp image pipelines at 448 x 448, shared
# by every dataset base (docs/data.md section 3).
img_size = 448

# Training: the official Resize((S, S)) -> CutoutPIL(0.5) -> RandAugment()
# on uint8 tensors (mmcoop/datasets/transforms/tensor_augment.py); the data
# preprocessor normalises. docs/benchmarks.md section 7 has its speed and
# the other two implementations (mmcv arrays; decoding and augmenting on
# the GPU).
train_pipeline = [
    # the official loader's pixels (TorchCodec's JPEG decoder where it is
    # installed, else PIL's; never rotated by EXIF), then torchvision's
    # uint8 antialiased bilinear resize: PIL's pixels within one grey level
    # (resize_backend='pillow': PIL's own resize, bit-identical, slower).
    # data_path='device' moves the augmentation onto the GPU (the same
    # pixels; mmcoop/datasets/data_path.py)
    dict(type='mmcoop.LoadImageTensor', scale=(img_size, img_size)),
    # official CutoutPIL(cutout_factor=0.5), always applied
    dict(type='TensorCutout', cutout_factor=0.5),
    # official pip randaugment==1.0.2 RandAugment(): its draw (15 ops x
    # magnitude 1..9, two ops, each with p = 0.5) and PIL's pixels (the ops
    # on the uint8 tensor with PIL's arithmetic)
    dict(type='TensorRandAugment'),
    dict(type='PackInputs'),
]

test_pipeline = [
    # scope prefix: found from any default scope (mmpretrain's inferencer)
    dict(type='mmcoop.LoadImageFromFileChecked'),
    # squash to 448 x 448 (torchvision Resize((448, 448)) on a PIL image:
    # bit-identical)
    dict(
        type='Resize',
        scale=(img_size, img_size),
        keep_ratio=False,
        backend='pillow',
        interpolation='bilinear'),
    dict(type='PackInputs'),
]
