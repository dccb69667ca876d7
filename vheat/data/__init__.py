"""Datasets for the vheat command line: ImageFolder trees and the built-in digits demo."""
from .digits import default_root, export_digits
from .folders import DatasetError, check_split, check_train_val, image_folder, load_rgb
from .loaders import DataBundle, build_data, build_transforms, build_val_loader, resolve_root

__all__ = ["DatasetError", "check_split", "check_train_val", "image_folder", "load_rgb", "export_digits",
           "default_root", "build_data", "build_val_loader", "build_transforms", "resolve_root", "DataBundle"]
