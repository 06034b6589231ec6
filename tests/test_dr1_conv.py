"""DR1Conv against the paper's per-pixel definition (Eq. 2 - 4)."""
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck
from torch.func import functional_call

from mmdet.registry import MODELS
from projects.dr1mask.models.layers.dr1_conv import DR1Conv, SigmoidGate, sigmoid_gate

ACTS = {
    'identity': lambda z: z,
    'one_plus_tanh': lambda z: 1 + torch.tanh(z),
    'two_sigmoid': lambda z: 2 * torch.sigmoid(z),
}


def per_pixel_dr1conv(x, a, b, weight, bias=None):
    """Eq. 3 read literally: a rank-1 modulated kernel for every position.

    At output position (h, w) the dynamic kernel is ``W o (b a^T)``:
    ``W'[o, i, j, k] = W[o, i, j, k] * b[o, h, w] * a[i, h', w']`` where
    ``(h', w') = (h + j - p, w + k - p)`` is the input position tap (j, k)
    reads (torch's cross-correlation, zero padding p), and ``y[:, h, w]`` is
    W' applied to the input patch. The bias is part of the static conv, so it
    is scaled by b too.
    """
    n, _, height, width = x.shape
    c_out, _, k, _ = weight.shape
    p = k // 2
    x_pad = F.pad(x, (p, p, p, p))
    a_pad = F.pad(a, (p, p, p, p))  # read only where x_pad is 0
    y = x.new_zeros(n, c_out, height, width)
    for s in range(n):
        for h in range(height):
            for w in range(width):
                a_patch = a_pad[s, :, h:h + k, w:w + k]
                x_patch = x_pad[s, :, h:h + k, w:w + k]
                b_hw = b[s, :, h, w]
                kernel = weight * b_hw[:, None, None, None] * a_patch[None]
                y[s, :, h, w] = (kernel * x_patch[None]).sum((1, 2, 3))
                if bias is not None:
                    y[s, :, h, w] += bias * b_hw
    return y


def random_inputs(n, c_in, c_out, height, width, dtype=torch.float64):
    gen = torch.Generator().manual_seed(height * 100 + width)
    shape_in = (n, c_in, height, width)
    x = torch.randn(shape_in, generator=gen, dtype=dtype)
    a = torch.randn(shape_in, generator=gen, dtype=dtype)
    b = torch.randn((n, c_out, height, width), generator=gen, dtype=dtype)
    return x, a, b


def build(c_in, c_out, k, **kwargs):
    conv = DR1Conv(c_in, c_out, k, context_act='identity', **kwargs)
    conv.init_weights()
    return conv.double()


@pytest.mark.parametrize('k', [1, 3, 5])
@pytest.mark.parametrize('size', [(5, 7), (4, 4), (1, 6), (6, 3), (2, 1)])
@pytest.mark.parametrize('bias', [False, True])
def test_matches_per_pixel_definition(k, size, bias):
    conv = build(3, 4, k, bias=bias)
    x, a, b = random_inputs(2, 3, 4, *size)
    expected = per_pixel_dr1conv(x, a, b, conv.conv.weight, conv.conv.bias)
    torch.testing.assert_close(conv(x, a, b), expected, rtol=1e-12,
                               atol=1e-12)


def test_1x1_is_eq2_at_every_position():
    conv = build(3, 5, 1)
    x, a, b = random_inputs(1, 3, 5, 4, 6)
    weight = conv.conv.weight[:, :, 0, 0]
    y = conv(x, a, b)
    for h in range(4):
        for w in range(6):
            y_hw = (weight @ (x[0, :, h, w] * a[0, :, h, w])) * b[0, :, h, w]
            torch.testing.assert_close(y[0, :, h, w], y_hw)


@pytest.mark.parametrize('act', list(ACTS))
def test_gradcheck_x_a_b_and_weight(act):
    conv = DR1Conv(2, 3, 3, bias=True, context_act=act).double()
    x, a, b = random_inputs(1, 2, 3, 3, 4)
    weight = conv.conv.weight.detach().clone()
    inputs = [t.requires_grad_() for t in (x, a, b, weight)]

    def fn(x, a, b, weight):
        return functional_call(conv, {'conv.weight': weight}, (x, a, b))

    assert gradcheck(fn, inputs)


def test_grads_are_nonzero():
    conv = DR1Conv(4, 4, 3, norm_cfg=dict(type='GN', num_groups=2),
                   act_cfg=dict(type='ReLU'))
    x, a, b = (t.float().requires_grad_()
               for t in random_inputs(2, 4, 4, 6, 5))
    (conv(x, a, b) * torch.randn(2, 4, 6, 5)).sum().backward()
    for grad in (x.grad, a.grad, b.grad, conv.conv.weight.grad):
        assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize('use_a,use_b', [(False, True), (True, False),
                                         (False, False)])
def test_factor_switched_off_is_factor_one(use_a, use_b):
    conv = build(3, 4, 3, use_a=use_a, use_b=use_b)
    x, a, b = random_inputs(2, 3, 4, 5, 6)
    expected = per_pixel_dr1conv(x, a if use_a else torch.ones_like(a),
                                 b if use_b else torch.ones_like(b),
                                 conv.conv.weight)
    y = conv(x, a if use_a else None, b if use_b else None)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    # a factor switched off is ignored even if given
    torch.testing.assert_close(conv(x, a, b), y)


def test_missing_factor_raises():
    x, a, b = random_inputs(1, 3, 4, 5, 6)
    with pytest.raises(ValueError, match='needs the factor a'):
        build(3, 4, 3)(x, None, b)
    with pytest.raises(ValueError, match='needs the factor b'):
        build(3, 4, 3)(x, a, None)


def test_norm_and_act_come_after_b():
    conv = build(4, 8, 3, norm_cfg=dict(type='GN', num_groups=4),
                 act_cfg=dict(type='ReLU'))
    torch.nn.init.normal_(conv.norm.weight)
    torch.nn.init.normal_(conv.norm.bias)
    x, a, b = random_inputs(2, 4, 8, 5, 7)
    expected = F.relu(conv.norm(conv.conv(x * a) * b))
    torch.testing.assert_close(conv(x, a, b), expected)


@pytest.mark.parametrize('act', list(ACTS))
def test_context_act(act):
    conv = DR1Conv(3, 4, 3, context_act=act).double()
    x, a, b = random_inputs(2, 3, 4, 5, 6)
    expected = conv.conv(x * ACTS[act](a)) * ACTS[act](b)
    torch.testing.assert_close(conv(x, a, b), expected)
    if act != 'identity':
        # at z = 0 both factors are 1: DR1Conv starts as the plain conv
        zero_a, zero_b = torch.zeros_like(a), torch.zeros_like(b)
        torch.testing.assert_close(conv(x, zero_a, zero_b), conv.conv(x))


def test_default_context_act_is_one_plus_tanh():
    assert DR1Conv(2, 2).context_act == 'one_plus_tanh'
    with pytest.raises(ValueError, match='context_act'):
        DR1Conv(2, 2, context_act='relu')
    with pytest.raises(ValueError, match='odd kernel_size'):
        DR1Conv(2, 2, kernel_size=2)


@pytest.mark.parametrize('act', list(ACTS))
def test_no_grad_path_same_result_inputs_untouched(act):
    conv = DR1Conv(3, 4, 3, norm_cfg=dict(type='GN', num_groups=2),
                   act_cfg=dict(type='ReLU'), context_act=act)
    x, a, b = (t.float() for t in random_inputs(2, 3, 4, 5, 6))
    copies = [t.clone() for t in (x, a, b)]
    with_grad = conv(x, a, b)
    with torch.no_grad():
        without_grad = conv(x, a, b)
    torch.testing.assert_close(without_grad, with_grad)
    for t, copy in zip((x, a, b), copies):
        assert torch.equal(t, copy)


@pytest.mark.parametrize('beta', [1.0, 2.0])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_sigmoid_gate_is_t_times_sigmoid(beta, dtype):
    # Saturated, near the pass-through threshold and ordinary values.
    z = torch.cat([torch.linspace(-60, 60, 241, dtype=dtype),
                   torch.randn(200, dtype=dtype)])
    t = torch.randn_like(z)
    expected = t * torch.sigmoid(beta * z)
    torch.testing.assert_close(sigmoid_gate(t, z, beta), expected)
    torch.testing.assert_close(
        sigmoid_gate(z.new_ones(()), z, beta), torch.sigmoid(beta * z))
    out = t.clone()
    assert sigmoid_gate(out, z, beta, out=out) is out
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize('act', ['one_plus_tanh', 'two_sigmoid'])
@pytest.mark.parametrize('use_a,use_b', [(True, True), (True, False),
                                         (False, True)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_bounded_factors_match_the_formula_forward_and_backward(
        act, use_a, use_b, dtype):
    """The constant 2 moved into the kernel and the fused passes give the
    values and gradients of ``Conv(x * act(a)) * act(b)`` written out."""
    conv = DR1Conv(3, 4, 3, bias=True, use_a=use_a, use_b=use_b,
                   context_act=act).to(dtype)
    torch.nn.init.normal_(conv.conv.bias)
    x, a, b = (t.to(dtype).requires_grad_()
               for t in random_inputs(2, 3, 4, 5, 6))
    act_fn = ACTS[act]
    expected = F.conv2d(x * act_fn(a) if use_a else x, conv.conv.weight,
                        conv.conv.bias, padding=1)
    if use_b:
        expected = expected * act_fn(b)
    y = conv(x, a, b)
    torch.testing.assert_close(y, expected)
    grad = torch.randn_like(y)
    inputs = (x, a, b, conv.conv.weight, conv.conv.bias)
    got = torch.autograd.grad(y, inputs, grad, allow_unused=True)
    want = torch.autograd.grad(expected, inputs, grad, allow_unused=True)
    for name, g, w in zip('x a b weight bias'.split(), got, want):
        assert (g is None) == (w is None), name
        if w is not None:
            torch.testing.assert_close(g, w, msg=name)


@pytest.mark.parametrize('beta', [1.0, 2.0])
def test_gradcheck_sigmoid_gate(beta):
    t, z = (torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
            for _ in range(2))
    assert gradcheck(lambda t, z: SigmoidGate.apply(t, z, beta), (t, z))


def test_registered():
    conv = MODELS.build(dict(type='DR1Conv', in_channels=2, out_channels=3))
    assert isinstance(conv, DR1Conv)
