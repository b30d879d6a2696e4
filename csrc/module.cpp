// The Python module mat_kernels._C. It has no Python-level functions: importing it runs the
// static TORCH_LIBRARY registrations, after which the ops live under torch.ops.mat_kernels.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
    static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
    return PyModule_Create(&module_def);
}
