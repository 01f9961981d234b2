// The one user-assigned managed identity of an environment. The Function App runs as it,
// the Functions host and the app reach Storage, Cosmos DB and Application Insights with
// it, and Flex Consumption pulls the deployment package with it.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region.')
param location string

@description('Tags applied to the identity.')
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
