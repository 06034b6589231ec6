"""Dynamic rank-1 convolution (DR1Conv), Sec. 3.1 of the DR1Mask paper.

A static convolution ``W`` is modulated at every position by two dense
context maps: ``A`` scales the input channels where the kernel reads them and
``B`` scales the output channels where the result is written (Eq. 2 - 4)::

    Y = DR1Conv_{A,B}(X) = Conv_W(X * A) * B                          (Eq. 4)

which, per output position, is a convolution with the rank-1 modulated kernel
``W o (b a^T)``. The cost is one ordinary convolution plus two elementwise
products: no unfolding and no per-pixel kernels are ever materialised.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor

from mmdet.registry import MODELS
from mmdet.utils import MultiConfig, OptConfigType

CONTEXT_ACTS = ('identity', 'one_plus_tanh', 'two_sigmoid')
# The bounded factors as 2 * sigmoid(beta * z): 1 + tanh(z) = 2 sigmoid(2 z).
SIGMOID_BETA = {'one_plus_tanh': 2.0, 'two_sigmoid': 1.0}
# Above it ``softplus_backward`` returns its first argument unchanged: there
# sigmoid(beta z) > 1 - 2.1e-9 is 1.0 in float32.
_SOFTPLUS_THRESHOLD = 20.0


def sigmoid_gate(t: Tensor,
                 z: Tensor,
                 beta: float,
                 out: Optional[Tensor] = None) -> Tensor:
    """``t * sigmoid(beta * z)`` in one pass over the tensors.

    The derivative of ``softplus_beta(z) = log(1 + exp(beta z)) / beta`` is
    ``sigmoid(beta z)``, so ATen's ``softplus_backward(t, z, beta)``
    computes exactly this product, ``t * e / (e + 1)`` with
    ``e = exp(beta z)`` (``t`` itself where ``beta z > 20``), in one fused
    kernel: the multiplications by beta and by t cost no pass of their own.
    ``t`` may be a 0-dim tensor (``sigmoid(beta z)`` itself) and ``out`` may
    be ``t`` (in place).

    Args:
        t (Tensor): The tensor to scale, broadcastable to ``z``'s shape.
        z (Tensor): Raw factors.
        beta (float): Slope of the sigmoid.
        out (Tensor, optional): Where to write the result.

    Returns:
        Tensor: ``t * sigmoid(beta * z)``, ``z``'s shape.
    """
    if out is None:
        return torch.ops.aten.softplus_backward(t, z, beta,
                                                _SOFTPLUS_THRESHOLD)
    return torch.ops.aten.softplus_backward.grad_input(
        t, z, beta, _SOFTPLUS_THRESHOLD, grad_input=out)


class SigmoidGate(torch.autograd.Function):
    """``t * s`` with ``s = sigmoid(beta * z)``, differentiable in t and z.

    Forward: one pass for ``s`` (:func:`sigmoid_gate` of a scalar 1), one
    for the product; ``t`` and ``s`` are saved. Backward, for the upstream
    gradient ``g``::

        dL/dt = g * s
        dL/dz = beta * g * t * s * (1 - s)

    the latter as ``sigmoid_backward(addcmul(0, g, t, value=beta), s)``:
    three passes in all, where autograd through ``sigmoid(z * beta) * t``
    takes four and one more for ``z * beta`` in the forward.
    """

    @staticmethod
    def forward(ctx, t: Tensor, z: Tensor, beta: float) -> Tensor:
        s = sigmoid_gate(z.new_ones(()), z, beta)
        ctx.save_for_backward(t, s)
        ctx.beta = beta
        return t * s

    @staticmethod
    def backward(ctx, grad: Tensor
                 ) -> Tuple[Optional[Tensor], Optional[Tensor], None]:
        t, s = ctx.saved_tensors
        grad_t = grad * s if ctx.needs_input_grad[0] else None
        grad_z = None
        if ctx.needs_input_grad[1]:
            scaled = torch.addcmul(
                grad.new_zeros(()), grad, t, value=ctx.beta)
            grad_z = torch.ops.aten.sigmoid_backward(scaled, s)
        return grad_t, grad_z, None


@MODELS.register_module()
class DR1Conv(BaseModule):
    """Dynamic rank-1 convolution: ``act(norm(Conv(x * A) * B))``.

    With no norm and no activation this is exactly the paper's Eq. 4
    (``Conv(X * A) * B``); for a 1x1 kernel it is Eq. 2 at every position. In
    the per-position form of Eq. 3 the input factor ``A`` is read at the
    input position each kernel tap reads, and the output factor ``B`` at the
    output position ``(h, w)``: the paper prints ``B[h - j, w - k]``, but
    only ``B[h, w]`` makes Eq. 3 agree with Eq. 4 and reduce to Eq. 2 for a
    1x1 kernel, so that is what is implemented (and tested against a
    per-pixel loop). The norm and the activation come after the
    ``* B`` product: the modulated response is what gets normalised.

    How the raw context maps become the factors is not fixed by the paper;
    ``context_act`` selects it and is applied to ``a`` and ``b`` here:

    - ``'identity'``: the raw linear outputs of the top layer, as in the one
      public DR1Conv experiment. With the top layer initialised at std 0.01
      ``X * A`` starts near 0 and only the following norm restores its
      scale.
    - ``'one_plus_tanh'``: ``1 + tanh(z)``, in (0, 2). A top layer initialised
      near 0 makes DR1Conv start as the plain convolution, and the factors
      stay bounded and positive.
    - ``'two_sigmoid'``: ``2 * sigmoid(z)``, in (0, 2); also 1 at z = 0, with
      half the slope of ``one_plus_tanh`` there.

    The default, ``'one_plus_tanh'``, is provisional: the choice is to be
    measured on the toy set.

    Args:
        in_channels (int): Channels of ``x`` and ``a``.
        out_channels (int): Channels of the output and of ``b``.
        kernel_size (int): Size of the static kernel ``W``. Defaults to 3.
        padding (int, optional): Zero padding of ``x * a``. None keeps the
            spatial size ('same' padding, odd kernels only).
        bias (bool): Whether the static convolution has a bias (added before
            the ``* B`` product). Defaults to False, as a norm usually
            follows.
        norm_cfg (dict, optional): Norm applied after ``* B``, built with
            :func:`mmcv.cnn.build_norm_layer`. Defaults to None.
        act_cfg (dict, optional): Activation applied after the norm, built
            with :func:`mmcv.cnn.build_activation_layer`. Defaults to None.
        use_a (bool): Use the input factor ``A``; False drops it (the
            ablations of Tables 1 and 2) and ``a`` may be None.
        use_b (bool): Use the output factor ``B``; likewise.
        context_act (str): One of ``'identity'``, ``'one_plus_tanh'``,
            ``'two_sigmoid'``, see above. Defaults to ``'one_plus_tanh'``.
        init_cfg (dict or list[dict], optional): Initialization config.
            Defaults to Kaiming (fan_out, normal) on the convolution, as
            mmcv's ``ConvModule`` does.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: int = 3,
                 padding: Optional[int] = None,
                 bias: bool = False,
                 norm_cfg: OptConfigType = None,
                 act_cfg: OptConfigType = None,
                 use_a: bool = True,
                 use_b: bool = True,
                 context_act: str = 'one_plus_tanh',
                 init_cfg: MultiConfig = dict(type='Kaiming',
                                              layer='Conv2d')) -> None:
        super().__init__(init_cfg=init_cfg)
        if context_act not in CONTEXT_ACTS:
            raise ValueError(f'context_act must be one of {CONTEXT_ACTS}, '
                             f'got {context_act!r}')
        if padding is None:
            if kernel_size % 2 == 0:
                raise ValueError('same padding needs an odd kernel_size, got '
                                 f'{kernel_size}; pass padding explicitly')
            padding = kernel_size // 2
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.use_a = use_a
        self.use_b = use_b
        self.context_act = context_act
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self.norm = (
            build_norm_layer(norm_cfg, out_channels)[1]
            if norm_cfg is not None else None)
        self.act = (
            build_activation_layer(act_cfg) if act_cfg is not None else None)

    def forward(self, x: Tensor, a: Optional[Tensor],
                b: Optional[Tensor]) -> Tensor:
        """Apply the dynamic rank-1 convolution (Eq. 4, then norm and act).

        Args:
            x (Tensor): Input features, shape (N, C_in, H, W).
            a (Tensor, optional): Raw input factor, shape (N, C_in, H, W);
                ``context_act`` is applied to it. Ignored (may be None) when
                ``use_a`` is False.
            b (Tensor, optional): Raw output factor, the output's shape
                (N, C_out, H, W) with the default padding; ``context_act`` is
                applied to it. Ignored (may be None) when ``use_b`` is False.

        Returns:
            Tensor: Output features, shape (N, C_out, H, W).
        """
        if self.use_a and a is None:
            raise ValueError('DR1Conv(use_a=True) needs the factor a')
        if self.use_b and b is None:
            raise ValueError('DR1Conv(use_b=True) needs the factor b')
        weight, bias = self.conv.weight, self.conv.bias
        if self.context_act != 'identity':
            # The bounded factors are 2 * sigmoid(beta * z): the constant 2
            # of each factor in use moves into the (small) kernel and bias,
            # Conv_W(x * 2 s_a) * 2 s_b = (Conv_{4W}(x * s_a) + 2 bias) * s_b,
            # exact in floating point (powers of 2), and saves a pass over
            # the features per factor.
            scale_b = 2 if self.use_b else 1
            weight = weight * (scale_b * (2 if self.use_a else 1))
            if bias is not None:
                bias = bias * scale_b
        if self.use_a:
            x = self._modulate(x, a, inplace=False)
        y = F.conv2d(x, weight, bias, self.conv.stride, self.conv.padding,
                     self.conv.dilation, self.conv.groups)
        if self.use_b:
            # The convolution's output is a fresh buffer nobody else holds;
            # reusing it saves a 4 * N * C_out * H * W byte allocation, but
            # autograd may need it unmodified, so only without a graph.
            inplace = not (torch.is_grad_enabled() and
                           (y.requires_grad or b.requires_grad))
            y = self._modulate(y, b, inplace=inplace)
        if self.norm is not None:
            y = self.norm(y)
        if self.act is not None:
            y = self.act(y)
        return y

    def _modulate(self, t: Tensor, z: Tensor, inplace: bool) -> Tensor:
        """Return ``t * z`` (``'identity'``) or ``t * sigmoid(beta * z)``
        (the bounded factors without their constant 2, which
        :meth:`forward` has moved into the kernel), in ``t``'s buffer if
        ``inplace``.

        These products are all that DR1Conv adds to the convolution's cost,
        so each takes the fewest passes over the features: without a graph
        one fused pass (:func:`sigmoid_gate`), with one the sigmoid and the
        product (:class:`SigmoidGate`); in an ONNX export, plain ops. Under
        mixed precision they are computed in fp32 at least (in fp32 or fp64
        the casts are no-ops).
        """
        dtype = torch.promote_types(torch.promote_types(t.dtype, z.dtype),
                                    torch.float32)
        t, z = t.to(dtype), z.to(dtype)
        if self.context_act == 'identity':
            return t.mul_(z) if inplace else t * z
        beta = SIGMOID_BETA[self.context_act]
        if torch.onnx.is_in_onnx_export():
            # ONNX has no softplus_backward: the exported graph gets the
            # product in plain ops (equal up to float rounding).
            return t * torch.sigmoid(z * beta)
        if torch.is_grad_enabled() and (t.requires_grad or z.requires_grad):
            return SigmoidGate.apply(t, z, beta)
        return sigmoid_gate(t, z, beta, out=t if inplace else None)
