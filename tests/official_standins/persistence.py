"""Stand-in for the official ``torch_utils.persistence`` (mat-spec.md §7), loaded by the tests
under that module name.

``persistent_class`` wraps a class in a subclass named like it whose module is this one, records
the constructor arguments, checks picklability at construction and pickles instances as a REDUCE
of ``_reconstruct_persistent_obj`` with a meta dict. Where the official loader exec's the
pickled module source, this stand-in looks the class up in a table filled at decoration time
(the tests must never execute anything from a pickle).
"""
import copy
import pickle
import sys

VERSION = 6
_decorators = set()
_classes_by_src = {}  # stand-in module source -> {class name: persistent class}


def _reconstruct_persistent_obj(meta):
    assert meta["type"] == "class" and meta["version"] == VERSION
    cls = _classes_by_src[meta["module_src"]][meta["class_name"]]
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
    src = f"<source text of {orig_class.__module__}>"

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
    _classes_by_src.setdefault(src, {})[orig_class.__name__] = Decorator
    return Decorator
