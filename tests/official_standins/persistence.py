"""Stand-in for the official ``torch_utils.persistence`` (mat-spec.md §7), loaded by the tests
under that module name.

``persistent_class`` wraps a class in a subclass named like it whose module is this one, records
the constructor arguments, checks picklability at construction and pickles instances as a REDUCE
of ``_reconstruct_persistent_obj`` with a meta dict holding the defining file's text. As in the official
loader, unpickling looks the class up in the module the text was read from when that module is
loaded in this process (``networks.mat`` itself, patched or not), and otherwise in a fresh module
named ``_imported_module_<hex>`` (a pickle written by another version of the file); where that loader exec's the pickled text, this stand-in loads the file the text was read
from (the tests never execute anything taken from a pickle).
"""
import copy
import importlib.util
import pickle
import sys
import uuid

VERSION = 6
_decorators = set()
_file_by_src = {}      # module source text -> the stand-in file it was read from
_module_by_src = {}    # module source text -> the module unpickling loaded for it
imported_names = []    # names registered in sys.modules by unpickling (the tests remove them)


def _module_to_src(module):
    for src, path in _file_by_src.items():
        if path == module.__file__:
            return src
    with open(module.__file__) as f:
        src = f.read()
    _file_by_src[src] = module.__file__
    _module_by_src[src] = module
    return src


def _src_to_module(src):
    module = _module_by_src.get(src)
    if module is None:
        name = "_imported_module_" + uuid.uuid4().hex
        spec = importlib.util.spec_from_file_location(name, _file_by_src[src])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        imported_names.append(name)
        _module_by_src[src] = module
        spec.loader.exec_module(module)
    return module


def _reconstruct_persistent_obj(meta):
    assert meta["type"] == "class" and meta["version"] == VERSION
    module = _src_to_module(meta["module_src"])
    cls = persistent_class(module.__dict__[meta["class_name"]])
    obj = cls.__new__(cls)
    setstate = getattr(obj, "__setstate__", None)
    if callable(setstate):
        setstate(meta["state"])
    else:
        obj.__dict__.update(meta["state"])
    return obj


def is_persistent(obj):
    return obj in _decorators or type(obj) in _decorators


def persistent_class(orig_class):
    assert isinstance(orig_class, type)
    if orig_class in _decorators:
        return orig_class
    src = _module_to_src(sys.modules[orig_class.__module__])

    class Decorator(orig_class):
        _orig_module_src = src
        _orig_class_name = orig_class.__name__

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._init_args = copy.deepcopy(args)
            self._init_kwargs = copy.deepcopy(kwargs)
            assert orig_class.__name__ in sys.modules[orig_class.__module__].__dict__
            pickle.dumps(self.__reduce__())

        def __reduce__(self):
            fields = list(super().__reduce__())
            fields += [None] * max(3 - len(fields), 0)
            if fields[0] is not _reconstruct_persistent_obj:
                meta = dict(type="class", version=VERSION, module_src=self._orig_module_src,
                            class_name=self._orig_class_name, state=fields[2])
                fields[:3] = [_reconstruct_persistent_obj, (meta,), None]
            return tuple(fields)

    Decorator.__name__ = orig_class.__name__
    _decorators.add(Decorator)
    return Decorator
