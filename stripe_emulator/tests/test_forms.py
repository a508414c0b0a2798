"""The bracket codec on its own."""

import pytest

from stripe_emulator import forms
from stripe_emulator.errors import InvalidRequest


def test_nested_hashes_and_indexed_arrays():
    params = forms.decode(
        "items[0][price]=price_a&items[0][quantity]=2&items[1][price]=price_b"
        "&metadata[tenant]=t1&recurring[meter]=mtr_1&expand[0]=product&expand[1]=customer")
    assert params == {
        "items": [{"price": "price_a", "quantity": "2"}, {"price": "price_b"}],
        "metadata": {"tenant": "t1"},
        "recurring": {"meter": "mtr_1"},
        "expand": ["product", "customer"],
    }


def test_empty_brackets_append_and_start_new_elements():
    params = forms.decode("lookup_keys[]=a&lookup_keys[]=b"
                          "&items[][price]=p1&items[][price]=p2&items[][quantity]=3")
    assert params["lookup_keys"] == ["a", "b"]
    assert params["items"] == [{"price": "p1"}, {"price": "p2", "quantity": "3"}]


def test_indices_sort_numerically_and_blank_values_survive():
    params = forms.decode("a[10]=ten&a[2]=two&metadata[gone]=")
    assert params["a"] == ["two", "ten"]
    assert params["metadata"] == {"gone": ""}


def test_url_encoded_keys_and_values():
    params = forms.decode("metadata%5Bk%20y%5D=v%26w&query=email%3A%27a%40b.c%27")
    assert params == {"metadata": {"k y": "v&w"}, "query": "email:'a@b.c'"}


@pytest.mark.parametrize("body", ["a=1&a[b]=2", "a[b]=1&a=2", "a]b=1"])
def test_conflicting_or_malformed_keys_are_rejected(body):
    with pytest.raises(InvalidRequest):
        forms.decode(body)


def test_encode_round_trips():
    value = {"items": [{"price": "p", "quantity": 2}], "metadata": {"k": "v"},
             "flag": True, "skip": None}
    assert forms.decode(forms.encode(value)) == {
        "items": [{"price": "p", "quantity": "2"}], "metadata": {"k": "v"}, "flag": "true"}
