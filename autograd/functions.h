// Differentiable functions: each calls a kernel through kernels/ops.h, saves what its backward needs
// and records a node when grad is required. Models are written with these and Tensor's views.
#pragma once
#include "autograd/basic_functions.h"
#include "autograd/nn_functions.h"
