"""The part of eBay's published OpenAPI contract for the Sell Inventory API
that a listing draft's payloads use: the ``InventoryItem`` of
createOrReplaceInventoryItem, the ``EbayOfferDetailsWithKeys`` of createOffer
and every schema they refer to.

Provenance: ``components.schemas`` of eBay's ``sell_inventory_v1_oas3.json``
(Inventory API version 1.13.0, OpenAPI 3.0.0, "eBay API License Agreement"),
as vendored in the public repository MinotaurLogistics/EbayInventoryApi at
commit 048ef39d82ec70f6b02bf8e0ce9df08bc0de2aad. Only the schemas reachable
from the two above are kept, their ``description`` texts left out; nothing
else is changed. eBay publishes the same file at
https://developer.ebay.com/api-docs/master/sell/inventory/openapi/3/sell_inventory_v1_oas3.json.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CONTRACT_VERSION", "SCHEMAS"]

CONTRACT_VERSION = "1.13.0"

SCHEMAS: dict[str, Any] = {
    "Amount": {
        "properties": {"currency": {"type": "string"}, "value": {"type": "string"}},
        "type": "object",
    },
    "Availability": {
        "properties": {
            "pickupAtLocationAvailability": {
                "items": {"$ref": "#/components/schemas/PickupAtLocationAvailability"},
                "type": "array",
            },
            "shipToLocationAvailability": {
                "$ref": "#/components/schemas/ShipToLocationAvailability"
            },
        },
        "type": "object",
    },
    "AvailabilityDistribution": {
        "properties": {
            "fulfillmentTime": {"$ref": "#/components/schemas/TimeDuration"},
            "merchantLocationKey": {"type": "string"},
            "quantity": {"format": "int32", "type": "integer"},
        },
        "type": "object",
    },
    "BestOffer": {
        "properties": {
            "autoAcceptPrice": {"$ref": "#/components/schemas/Amount"},
            "autoDeclinePrice": {"$ref": "#/components/schemas/Amount"},
            "bestOfferEnabled": {"type": "boolean"},
        },
        "type": "object",
    },
    "Charity": {
        "properties": {"charityId": {"type": "string"}, "donationPercentage": {"type": "string"}},
        "type": "object",
    },
    "Dimension": {
        "properties": {
            "height": {"type": "number"},
            "length": {"type": "number"},
            "unit": {"type": "string"},
            "width": {"type": "number"},
        },
        "type": "object",
    },
    "EbayOfferDetailsWithKeys": {
        "properties": {
            "availableQuantity": {"format": "int32", "type": "integer"},
            "categoryId": {"type": "string"},
            "charity": {"$ref": "#/components/schemas/Charity"},
            "format": {"type": "string"},
            "hideBuyerDetails": {"type": "boolean"},
            "includeCatalogProductDetails": {"type": "boolean"},
            "listingDescription": {"type": "string"},
            "listingDuration": {"type": "string"},
            "listingPolicies": {"$ref": "#/components/schemas/ListingPolicies"},
            "listingStartDate": {"type": "string"},
            "lotSize": {"format": "int32", "type": "integer"},
            "marketplaceId": {"type": "string"},
            "merchantLocationKey": {"type": "string"},
            "pricingSummary": {"$ref": "#/components/schemas/PricingSummary"},
            "quantityLimitPerBuyer": {"format": "int32", "type": "integer"},
            "secondaryCategoryId": {"type": "string"},
            "sku": {"type": "string"},
            "storeCategoryNames": {"items": {"type": "string"}, "type": "array"},
            "tax": {"$ref": "#/components/schemas/Tax"},
        },
        "type": "object",
    },
    "InventoryItem": {
        "properties": {
            "availability": {"$ref": "#/components/schemas/Availability"},
            "condition": {"type": "string"},
            "conditionDescription": {"type": "string"},
            "packageWeightAndSize": {"$ref": "#/components/schemas/PackageWeightAndSize"},
            "product": {"$ref": "#/components/schemas/Product"},
        },
        "type": "object",
    },
    "ListingPolicies": {
        "properties": {
            "bestOfferTerms": {"$ref": "#/components/schemas/BestOffer"},
            "eBayPlusIfEligible": {"type": "boolean"},
            "fulfillmentPolicyId": {"type": "string"},
            "paymentPolicyId": {"type": "string"},
            "returnPolicyId": {"type": "string"},
            "shippingCostOverrides": {
                "items": {"$ref": "#/components/schemas/ShippingCostOverride"},
                "type": "array",
            },
        },
        "type": "object",
    },
    "PackageWeightAndSize": {
        "properties": {
            "dimensions": {"$ref": "#/components/schemas/Dimension"},
            "packageType": {"type": "string"},
            "weight": {"$ref": "#/components/schemas/Weight"},
        },
        "type": "object",
    },
    "PickupAtLocationAvailability": {
        "properties": {
            "availabilityType": {"type": "string"},
            "fulfillmentTime": {"$ref": "#/components/schemas/TimeDuration"},
            "merchantLocationKey": {"type": "string"},
            "quantity": {"format": "int32", "type": "integer"},
        },
        "type": "object",
    },
    "PricingSummary": {
        "properties": {
            "auctionReservePrice": {"$ref": "#/components/schemas/Amount"},
            "auctionStartPrice": {"$ref": "#/components/schemas/Amount"},
            "minimumAdvertisedPrice": {"$ref": "#/components/schemas/Amount"},
            "originalRetailPrice": {"$ref": "#/components/schemas/Amount"},
            "originallySoldForRetailPriceOn": {"type": "string"},
            "price": {"$ref": "#/components/schemas/Amount"},
            "pricingVisibility": {"type": "string"},
        },
        "type": "object",
    },
    "Product": {
        "properties": {
            "aspects": {
                "additionalProperties": {"items": {"type": "string"}, "type": "array"},
                "type": "object",
            },
            "brand": {"type": "string"},
            "description": {"type": "string"},
            "ean": {"items": {"type": "string"}, "type": "array"},
            "epid": {"type": "string"},
            "imageUrls": {"items": {"type": "string"}, "type": "array"},
            "isbn": {"items": {"type": "string"}, "type": "array"},
            "mpn": {"type": "string"},
            "subtitle": {"type": "string"},
            "title": {"type": "string"},
            "upc": {"items": {"type": "string"}, "type": "array"},
        },
        "type": "object",
    },
    "ShipToLocationAvailability": {
        "properties": {
            "availabilityDistributions": {
                "items": {"$ref": "#/components/schemas/AvailabilityDistribution"},
                "type": "array",
            },
            "quantity": {"format": "int32", "type": "integer"},
        },
        "type": "object",
    },
    "ShippingCostOverride": {
        "properties": {
            "additionalShippingCost": {"$ref": "#/components/schemas/Amount"},
            "priority": {"format": "int32", "type": "integer"},
            "shippingCost": {"$ref": "#/components/schemas/Amount"},
            "shippingServiceType": {"type": "string"},
            "surcharge": {"$ref": "#/components/schemas/Amount"},
        },
        "type": "object",
    },
    "Tax": {
        "properties": {
            "applyTax": {"type": "boolean"},
            "thirdPartyTaxCategory": {"type": "string"},
            "vatPercentage": {"type": "number"},
        },
        "type": "object",
    },
    "TimeDuration": {
        "properties": {"unit": {"type": "string"}, "value": {"format": "int32", "type": "integer"}},
        "type": "object",
    },
    "Weight": {
        "properties": {"unit": {"type": "string"}, "value": {"type": "number"}},
        "type": "object",
    },
}
